//! A tenant's own DNS zone, served by a real Knot (`knotd`) on a free 127.0.0.1 port: the
//! records a custom domain's owner creates, added and removed with `knsupdate` (RFC 2136,
//! allowed from 127.0.0.1 without a key), and asked with `kdig`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::harness::eventually;

pub struct Zone {
    pub addr: SocketAddr,
    /// The zone's name (`k1a2b3c4d.test`).
    pub name: String,
    _child: Child,
    dir: tempfile::TempDir,
}

impl Zone {
    /// Starts knotd for a fresh zone and waits until it answers for it.
    pub async fn start() -> Result<Self> {
        Self::start_keyed(None).await
    }

    /// The same, updates allowed only when signed with TSIG key `(name, base64 secret)`
    /// (HMAC-SHA256), as a broker's RFC 2136 provider signs them.
    pub async fn start_keyed(key: Option<(&str, &str)>) -> Result<Self> {
        let name = format!("k{:08x}.test", rand::random::<u32>());
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let port = crate::public::pebble::free_port().port();
            write_config(dir.path(), port, &name, key)?;
            let log = std::fs::File::create(dir.path().join("knotd.log"))?;
            let child = Command::new(knotd())
                .arg("-c")
                .arg(dir.path().join("knot.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("knotd is missing: apt-get install -y knot")?;
            let zone = Zone {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                name: name.clone(),
                _child: child,
                dir,
            };
            let ready = eventually("knotd answers", Duration::from_secs(10), || async {
                (!zone.dig(&zone.name, "SOA").await.is_empty()).then_some(())
            })
            .await;
            if ready.is_ok() {
                return Ok(zone);
            }
            last = zone.log();
        }
        bail!("knotd did not start:\n{last}")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    /// `name.ZONE`.
    pub fn fqdn(&self, name: &str) -> String {
        format!("{name}.{}", self.name)
    }

    /// What knotd answers for `name` and `rtype`, one record per line (`kdig +short`).
    pub async fn dig(&self, name: &str, rtype: &str) -> String {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &self.addr.port().to_string(), "+short"])
            .args([name, rtype])
            .output()
            .await;
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Applies `update add|delete …` lines in one RFC 2136 update.
    pub async fn update(&self, lines: &[String]) -> Result<()> {
        let mut script = format!(
            "server 127.0.0.1 {}\nzone {}.\norigin {}.\n",
            self.addr.port(),
            self.name,
            self.name
        );
        for l in lines {
            script.push_str(l);
            script.push('\n');
        }
        script.push_str("send\nquit\n");
        let mut child = Command::new("knsupdate")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("knsupdate is missing: apt-get install -y knot-dnsutils")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(script.as_bytes())
            .await?;
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "knsupdate failed: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn knotd() -> &'static str {
    if Path::new("/usr/sbin/knotd").exists() {
        "/usr/sbin/knotd"
    } else {
        "knotd"
    }
}

fn write_config(dir: &Path, port: u16, zone: &str, key: Option<(&str, &str)>) -> Result<()> {
    let d = dir.display();
    let (keys, acl_key) = match key {
        Some((name, secret)) => (
            format!("key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n"),
            format!("    key: {name}\n"),
        ),
        None => (String::new(), String::new()),
    };
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: \"{d}\"\n\
         log:\n  - target: stderr\n    any: info\n\
         {keys}\
         acl:\n  - id: local\n    address: 127.0.0.1\n    action: update\n{acl_key}\
         zone:\n  - domain: {zone}\n    storage: \"{d}\"\n    file: \"{zone}.zone\"\n    acl: local\n    zonefile-sync: -1\n"
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    let zone_file = format!(
        "$ORIGIN {zone}.\n$TTL 1\n@ SOA ns1 hostmaster 1 3600 600 86400 1\n@ NS ns1\nns1 A 127.0.0.1\n"
    );
    std::fs::write(dir.join(format!("{zone}.zone")), zone_file)?;
    Ok(())
}
