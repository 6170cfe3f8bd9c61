//! Test harness: the real `broker` binary on port 0, real OpenSSH clients, an origin server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until it answers `status` (the visitor's view of a change), returning that
/// response, or fails after `deadline`.
pub async fn answers(
    what: &str,
    deadline: Duration,
    url: &str,
    status: u16,
) -> Result<crate::client::Resp> {
    eventually(what, deadline, || async move {
        crate::client::get(url)
            .await
            .ok()
            .filter(|r| r.status == status)
    })
    .await
}

/// Which database a broker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// How to start a broker, beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra environment variables for `serve`.
    pub env: Vec<(String, String)>,
    /// Collect stderr into [`TestBroker::stderr`] (at log level info) instead of inheriting it.
    pub capture_stderr: bool,
    /// The log filter (`--log`) instead of the default (info when captured, else warn).
    pub log: Option<String>,
    /// Run `serve` with this soft and hard open-file limit (through `prlimit`), as a unit's
    /// `LimitNOFILE` would.
    pub open_files: Option<u64>,
    /// Give `serve` the database URL in a file (`--database-url-file`) instead of
    /// `BROKER_DATABASE_URL`; a Postgres URL without a password gets one (which a trust-auth
    /// server ignores), kept in [`TestBroker::db_password`].
    pub url_in_file: bool,
    /// Reach Postgres through this local port (a fault-injecting proxy in front of the
    /// server at 127.0.0.1:5432) instead of directly; the admin commands go through it too.
    pub pg_port: Option<u16>,
    /// Run on this database (another broker's `db_url`) instead of a fresh one: a second node
    /// beside that broker, which owns the database and drops it (see [`TestBroker::beside`]).
    pub database: Option<String>,
    /// Put the data dir (SQLite database included) on a tmpfs of this many MiB, so a test can
    /// fill the disk (needs root, as the test machine runs; unmounted when dropped).
    pub small_disk_mib: Option<u32>,
}

/// A running broker process with its own data dir (and Postgres database).
pub struct TestBroker {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    pub ssh_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    /// The admin listener's port (the API for scripts on the box).
    pub api_port: u16,
    /// The first-run setup token `serve` printed, if it printed one.
    pub setup_token: Option<String>,
    extra: Vec<String>,
    pg: Option<(String, String)>,
    opts: Options,
    /// What `serve` wrote to stderr, one entry per line, with `Options::capture_stderr`.
    pub stderr: Lines,
    /// The password in the URL file, with `Options::url_in_file` on Postgres.
    pub db_password: Option<String>,
}

impl TestBroker {
    pub async fn start() -> Result<Self> {
        Self::start_with(Db::Sqlite, &[]).await
    }

    pub async fn start_with(db: Db, extra: &[&str]) -> Result<Self> {
        Self::start_opts(db, extra, Options::default()).await
    }

    pub async fn start_opts(db: Db, extra: &[&str], opts: Options) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if let Some(mib) = opts.small_disk_mib {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir.path())
                .status()
                .context("mount")?
                .success();
            if !ok {
                bail!("cannot mount a {mib} MiB tmpfs on the data dir (the test needs root)");
            }
        }
        let (db_url, pg) = match (opts.database.clone(), db) {
            (Some(url), _) => (url, None),
            (None, Db::Sqlite) => (
                format!("sqlite://{}", dir.path().join("warren.db").display()),
                None,
            ),
            (None, Db::Postgres) => {
                let (url, admin, name) = create_pg_database().await?;
                let url = match opts.pg_port {
                    Some(port) => url.replacen(":5432/", &format!(":{port}/"), 1),
                    None => url,
                };
                (url, Some((admin, name)))
            }
        };
        let mut b = Self {
            child: None,
            dir,
            db_url,
            ssh_port: 0,
            http_port: 0,
            https_port: 0,
            api_port: 0,
            setup_token: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pg,
            opts,
            stderr: Arc::new(Mutex::new(Vec::new())),
            db_password: None,
        };
        b.spawn()?;
        Ok(b)
    }

    /// Another node on this broker's database, with its own data dir, ports and `extra` flags
    /// (a cluster on Postgres; on SQLite, what must be refused). Drop it before this one: the
    /// database goes with this one.
    pub async fn beside(&self, extra: &[&str]) -> Result<Self> {
        let db = if self.db_url.starts_with("sqlite:") {
            Db::Sqlite
        } else {
            Db::Postgres
        };
        let opts = Options {
            database: Some(self.db_url.clone()),
            ..Options::default()
        };
        Self::start_opts(db, extra, opts).await
    }

    fn base_command(&self) -> Command {
        self.command_with_limit(None)
    }

    /// The broker's command, under `prlimit --nofile=N:N` when `open_files` is given.
    fn command_with_limit(&self, open_files: Option<u64>) -> Command {
        let mut cmd = match open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_broker"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_broker")),
        };
        cmd.env_remove("BROKER_CONFIG")
            .env("BROKER_DATA_DIR", self.dir.path())
            .env("BROKER_DATABASE_URL", &self.db_url);
        // Settings the admin commands check input against must match the server's, as one
        // config file would make them on a real box.
        if let Some(i) = self.extra.iter().position(|a| a == "--tcp-ports")
            && let Some(range) = self.extra.get(i + 1)
        {
            cmd.env("BROKER_TCP_PORTS", range);
        }
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = self.command_with_limit(self.opts.open_files);
        let log = if let Some(log) = &self.opts.log {
            log.clone()
        } else if self.opts.capture_stderr {
            "info".to_owned()
        } else {
            std::env::var("WARREN_TEST_LOG").unwrap_or_else(|_| "warn".into())
        };
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        if self.opts.url_in_file {
            let (url, password) = with_password(&self.db_url);
            let file = self.dir.path().join("database-url");
            std::fs::write(&file, format!("{url}\n"))?;
            self.db_password = password;
            cmd.env_remove("BROKER_DATABASE_URL")
                .arg("--database-url-file")
                .arg(file);
        }
        // Port 0 everywhere, unless the test picked an address itself.
        for flag in ["--ssh-addr", "--http-addr", "--https-addr", "--admin-addr"] {
            if !self.extra.iter().any(|a| a == flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.args(["--log", &log])
            .args(&self.extra)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(if self.opts.capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        let mut child = cmd.spawn().context("spawn broker")?;
        if let Some(stderr) = child.stderr.take() {
            let sink = self.stderr.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    let text = String::from_utf8_lossy(&line);
                    sink.lock()
                        .expect("lock")
                        .push(text.trim_end_matches('\n').to_owned());
                    line.clear();
                }
            });
        }
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut ssh, mut http, mut https, mut api) = (0u16, 0u16, 0u16, 0u16);
        let mut setup = None;
        for line in lines.by_ref() {
            let line = line?;
            let port = |l: &str| -> Option<u16> {
                l.split_whitespace()
                    .nth(1)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            };
            if line.starts_with("  ssh ") {
                ssh = port(&line).unwrap_or(0);
            } else if line.starts_with("  http ") {
                http = port(&line).unwrap_or(0);
            } else if line.starts_with("  https ") {
                https = port(&line).unwrap_or(0);
            } else if let Some(url) = line.strip_prefix("  api   http://") {
                api = url
                    .split('/')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
            } else if let Some((_, token)) = line.trim().rsplit_once("/setup#") {
                setup = Some(token.to_owned());
            } else if line.starts_with("Try: ") {
                break;
            }
        }
        if ssh == 0 || http == 0 || https == 0 {
            let _ = child.kill();
            bail!("broker did not print its ports");
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        self.ssh_port = ssh;
        self.http_port = http;
        self.https_port = https;
        self.api_port = api;
        self.setup_token = setup;
        Ok(())
    }

    /// Stops and starts the broker on the same data dir and database (new ports).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Kills the broker outright (SIGKILL): no drain, no last audit rows.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker (SIGTERM, then kill).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends the broker a signal (`TERM`, `HUP`…).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        if !st.success() {
            bail!("kill -{sig} failed");
        }
        Ok(())
    }

    /// Waits for the broker to exit on its own (after a signal), at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let end = Instant::now() + within;
        let child = self.child.as_mut().context("not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > end {
                bail!("broker still running after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stderr lines captured so far (`Options::capture_stderr`).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// (VmRSS, VmHWM) of the broker in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// Runs an admin command against this broker's database.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(self
            .base_command()
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Runs an admin command with `input` on its stdin (a pipe, not a terminal).
    pub fn cli_input(&self, args: &[&str], input: &str) -> Result<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .base_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Runs an admin command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "broker {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a user with a fresh ed25519 key; returns the private key path.
    pub fn user_with_key(&self, name: &str) -> Result<PathBuf> {
        self.cli_ok(&["user", "add", name])?;
        let key = keygen(self.dir.path(), name, "ed25519")?;
        self.cli_ok(&["key", "add", name, &format!("{}.pub", key.display())])?;
        Ok(key)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{name}.localhost:{}", self.http_port)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
        if self.opts.small_disk_mib.is_some() {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
        if let Some((admin, db)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        use sqlx::Connection;
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// `url` with a password in its userinfo (a made-up one if it has none, and a user), and the
/// password.
fn with_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((_, pw)) => (url.to_owned(), Some(pw.to_owned())),
            None if scheme.starts_with("postgres") => {
                let pw = format!("e2e-secret-{:016x}", rand::random::<u64>());
                let url = format!("{scheme}://{}:{pw}{}", &rest[..at], &rest[at..]);
                (url, Some(pw))
            }
            None => (url.to_owned(), None),
        },
        None => (url.to_owned(), None),
    }
}

async fn create_pg_database() -> Result<(String, String, String)> {
    use sqlx::Connection;
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("warren_e2e_{:016x}", rand::random::<u64>());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .context("Postgres at DATABASE_URL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .context("DATABASE_URL has no database part")?;
    Ok((format!("{base}/{name}"), admin, name))
}

/// `ssh-keygen -t KIND` into `dir/NAME`; returns the private key path.
/// The tunnel's label in a URL the session printed: `http://brave-otter-42.localhost:8080` →
/// `brave-otter-42`.
pub fn label_of(url: &str) -> Result<String> {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('.')
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("no label in {url:?}"))
}

/// An origin tagged `tag` served as `name` (`-R name:80:…`) by a new session with `key`:
/// the origin, the session and the URL it printed.
pub async fn serve_as(
    broker: &TestBroker,
    key: &Path,
    name: &str,
    tag: &str,
) -> Result<(crate::origin::Origin, Ssh, String)> {
    let origin = crate::origin::Origin::start(tag).await?;
    let ssh = Ssh::spawn(
        broker,
        key,
        &["-R", &format!("{name}:80:{}", origin.target())],
    )?;
    let url = ssh.url(0).await?;
    Ok((origin, ssh, url))
}

pub fn keygen(dir: &Path, name: &str, kind: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}-{kind}-{:08x}", rand::random::<u32>()));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let st = cmd.status().context("ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed");
    }
    Ok(path)
}

/// Lines a process printed, as a reader task collects them.
type Lines = Arc<Mutex<Vec<String>>>;

/// A real OpenSSH client process.
pub struct Ssh {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    pub out: Lines,
    pub err: Lines,
}

impl Ssh {
    /// The command line [`Ssh::spawn_port`] runs, for tests that drive the process themselves
    /// (arguments added after it follow the host: a command or a subsystem name).
    pub fn command(port: u16, key: &Path, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        // Test-specific options first: for OpenSSH the first value given wins.
        cmd.args(args)
            .args(["-F", "/dev/null", "-T", "-i"])
            .arg(key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "ServerAliveInterval=0",
                "-p",
                &port.to_string(),
            ])
            .arg("tunnel@127.0.0.1");
        cmd
    }

    /// `ssh -O OP -R SPEC` through the control socket of a session started with
    /// `-o ControlMaster=yes -o ControlPath=…` (`ctl_opt` is that `ControlPath=…`).
    pub async fn mux(
        port: u16,
        ctl_opt: &str,
        op: &str,
        spec: &str,
    ) -> Result<std::process::Output> {
        Ok(tokio::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o", ctl_opt, "-O", op, "-R", spec])
            .arg(format!("-p{port}"))
            .arg("tunnel@127.0.0.1")
            .output()
            .await?)
    }

    /// [`Ssh::spawn`] as a control master with its socket in the broker's directory, so that the
    /// test can ask for more forwards over the same session ([`Ssh::mux`], given the
    /// `ControlPath=…` option returned beside it).
    pub fn spawn_master(broker: &TestBroker, key: &Path, args: &[&str]) -> Result<(Self, String)> {
        let ctl_opt = format!(
            "ControlPath={}",
            broker.dir.path().join("ctl.sock").display()
        );
        let mut all = vec!["-o", "ControlMaster=yes", "-o", &ctl_opt];
        all.extend_from_slice(args);
        Ok((Self::spawn(broker, key, &all)?, ctl_opt))
    }

    /// `ssh -p PORT -i KEY ARGS… tunnel@127.0.0.1` with stdin as a pipe (a session, no pty).
    pub fn spawn(broker: &TestBroker, key: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn_port(broker.ssh_port, key, args)
    }

    pub fn spawn_port(port: u16, key: &Path, args: &[&str]) -> Result<Self> {
        let mut cmd = Self::command(port, key, args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawn ssh")?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        for (stream, sink) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                out.clone(),
            ),
            (Box::new(stderr), err.clone()),
        ] {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    sink.lock()
                        .expect("lock")
                        .push(l.trim_end_matches('\r').to_owned());
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            out,
            err,
        })
    }

    /// Waits for a stdout line containing `needle`.
    pub async fn line(&self, needle: &str) -> Result<String> {
        self.wait_line("output", &[&self.out], needle).await
    }

    /// Waits for a stderr line containing `needle`.
    pub async fn err_line(&self, needle: &str) -> Result<String> {
        self.wait_line("stderr", &[&self.err], needle).await
    }

    /// Waits for a line containing `needle` on stdout or stderr.
    pub async fn any_line(&self, needle: &str) -> Result<String> {
        self.wait_line("output", &[&self.out, &self.err], needle)
            .await
    }

    /// Waits for a line containing `needle` in any of `sinks`; on failure says all ssh printed.
    async fn wait_line(&self, what: &str, sinks: &[&Lines], needle: &str) -> Result<String> {
        eventually(
            &format!("ssh {what} containing {needle:?}"),
            DEADLINE,
            || {
                let found = sinks.iter().find_map(|s| {
                    s.lock()
                        .expect("lock")
                        .iter()
                        .find(|l| l.contains(needle))
                        .cloned()
                });
                async move { found }
            },
        )
        .await
        .with_context(|| self.all_output())
    }

    /// The `n`th printed tunnel URL (0-based), waiting for it.
    pub async fn url(&self, n: usize) -> Result<String> {
        let out = self.out.clone();
        let line = eventually("tunnel URL", DEADLINE, || {
            let urls: Vec<String> = out
                .lock()
                .expect("lock")
                .iter()
                .filter(|l| l.contains(" -> forward "))
                .cloned()
                .collect();
            async move { urls.get(n).cloned() }
        })
        .await
        .with_context(|| self.all_output())?;
        Ok(line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(bytes).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Waits for the client to exit.
    pub async fn exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(within, self.child.wait())
            .await
            .context("ssh did not exit")??)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    pub fn all_output(&self) -> String {
        format!(
            "stdout: {:?}\nstderr: {:?}",
            self.out.lock().map(|v| v.clone()),
            self.err.lock().map(|v| v.clone())
        )
    }
}
