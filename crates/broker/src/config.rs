//! The broker's configuration: one typed struct, from a TOML file, `BROKER_*` variables and
//! flags, in that order of precedence (flags win). Every flag `--foo-bar` has the variable
//! `BROKER_FOO_BAR` and the TOML key `foo_bar`. Unknown keys and bad values are errors that name
//! the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use warren_edge::IpNet;

/// Settings as flags (and, through clap, `BROKER_*` variables). All optional: what is not given
/// falls back to the config file, then to the defaults.
#[derive(Debug, Default, Clone, Args)]
pub struct SettingsArgs {
    /// TOML config file.
    #[arg(long, global = true, env = "BROKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the SQLite database and the SSH host key live [default: ./warren-data].
    #[arg(long, global = true, env = "BROKER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…` [default: sqlite://DATA_DIR/warren.db].
    #[arg(long, global = true, env = "BROKER_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// SSH listener [default: 127.0.0.1:2222].
    #[arg(long, global = true, env = "BROKER_SSH_ADDR", value_name = "ADDR")]
    pub ssh_addr: Option<SocketAddr>,
    /// HTTP listener for visitors [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "BROKER_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// HTTPS listener for visitors (TLS termination and passthrough) [default: 127.0.0.1:8443].
    #[arg(long, global = true, env = "BROKER_HTTPS_ADDR", value_name = "ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// Operator-supplied certificate chain (PEM), served for the names it covers.
    #[arg(long, global = true, env = "BROKER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "BROKER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Port of printed https:// URLs [default: the HTTPS listener's port].
    #[arg(
        long,
        global = true,
        env = "BROKER_PUBLIC_TLS_PORT",
        value_name = "PORT"
    )]
    pub public_tls_port: Option<u16>,
    /// Send Strict-Transport-Security with this max-age on HTTPS responses [default: off].
    #[arg(long, global = true, env = "BROKER_HSTS_MAX_AGE", value_name = "SECS")]
    pub hsts_max_age: Option<u64>,
    /// Public ports for raw TCP tunnels (`-R tcp:0:…`), as FIRST-LAST [default: 20000-20999].
    #[arg(long, global = true, env = "BROKER_TCP_PORTS", value_name = "RANGE")]
    pub tcp_ports: Option<String>,
    /// Address raw TCP tunnel ports listen on [default: the HTTP listener's address].
    #[arg(long, global = true, env = "BROKER_TCP_ADDR", value_name = "IP")]
    pub tcp_addr: Option<std::net::IpAddr>,
    /// Base domain: tunnels are NAME.DOMAIN [default: localhost].
    #[arg(long, global = true, env = "BROKER_DOMAIN")]
    pub domain: Option<String>,
    /// Scheme of the URLs printed to users [default: http].
    #[arg(
        long,
        global = true,
        env = "BROKER_PUBLIC_SCHEME",
        value_name = "SCHEME"
    )]
    pub public_scheme: Option<String>,
    /// Port of the URLs printed to users [default: the HTTP listener's port].
    #[arg(long, global = true, env = "BROKER_PUBLIC_PORT", value_name = "PORT")]
    pub public_port: Option<u16>,
    /// Let `-R NAME:80:…` claim a free NAME for the user [default: true].
    #[arg(long, global = true, env = "BROKER_AUTO_CLAIM", value_name = "BOOL")]
    pub auto_claim: Option<bool>,
    /// Seconds a name stays with its owner after the tunnel drops [default: 600].
    #[arg(long, global = true, env = "BROKER_GRACE_SECS", value_name = "SECS")]
    pub grace_secs: Option<u64>,
    /// Concurrent visitor connections per tunnel [default: 256].
    #[arg(
        long,
        global = true,
        env = "BROKER_MAX_TUNNEL_CONNECTIONS",
        value_name = "N"
    )]
    pub max_tunnel_connections: Option<usize>,
    /// Request head size limit in bytes [default: 32768].
    #[arg(
        long,
        global = true,
        env = "BROKER_MAX_HEADER_BYTES",
        value_name = "BYTES"
    )]
    pub max_header_bytes: Option<usize>,
    /// Request header count limit [default: 100].
    #[arg(long, global = true, env = "BROKER_MAX_HEADERS", value_name = "N")]
    pub max_headers: Option<usize>,
    /// Seconds a visitor has to send a request head [default: 20].
    #[arg(
        long,
        global = true,
        env = "BROKER_HEADER_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub header_timeout_secs: Option<u64>,
    /// Comma-separated IPs/CIDRs whose X-Forwarded-* headers are trusted [default: none].
    #[arg(long, global = true, env = "BROKER_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDRS", value_parser = parse_net)]
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// Seconds between SSH keepalives [default: 15].
    #[arg(
        long,
        global = true,
        env = "BROKER_KEEPALIVE_SECS",
        value_name = "SECS"
    )]
    pub keepalive_secs: Option<u64>,
    /// Unanswered keepalives before a client counts as dead [default: 4].
    #[arg(long, global = true, env = "BROKER_KEEPALIVE_MAX", value_name = "N")]
    pub keepalive_max: Option<usize>,
    /// Seconds a new SSH connection has to authenticate [default: 30].
    #[arg(
        long,
        global = true,
        env = "BROKER_AUTH_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub auth_timeout_secs: Option<u64>,
    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, global = true, env = "BROKER_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// The same settings as a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    ssh_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_tls_port: Option<u16>,
    hsts_max_age: Option<u64>,
    tcp_ports: Option<String>,
    tcp_addr: Option<std::net::IpAddr>,
    domain: Option<String>,
    public_scheme: Option<String>,
    public_port: Option<u16>,
    auto_claim: Option<bool>,
    grace_secs: Option<u64>,
    max_tunnel_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    header_timeout_secs: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    keepalive_secs: Option<u64>,
    keepalive_max: Option<usize>,
    auth_timeout_secs: Option<u64>,
    log: Option<String>,
}

/// `FIRST-LAST` (inclusive) or a single port.
fn parse_range(s: &str) -> std::result::Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range like 20000-20999");
    let (a, b) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// An IP network (`10.0.0.0/8`) or a single address (`10.0.0.1`).
fn parse_net(s: &str) -> std::result::Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))
}

/// A string whose `Debug` does not show it (database URLs carry passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

impl Secret {
    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let creds = &self.0[s + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                format!("{}{}:***{}", &self.0[..s + 3], user, &self.0[at..])
            }
            _ => self.0.clone(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: Secret,
    /// SSH listener.
    pub ssh_addr: SocketAddr,
    /// HTTP listener.
    pub http_addr: SocketAddr,
    /// HTTPS listener.
    pub https_addr: SocketAddr,
    /// Operator-supplied certificate (chain, key).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Port of printed https URLs; `None` means the HTTPS listener's actual port.
    pub public_tls_port: Option<u16>,
    /// HSTS max-age, if any.
    pub hsts_max_age: Option<u64>,
    /// Raw TCP tunnel ports.
    pub tcp_ports: std::ops::RangeInclusive<u16>,
    /// Where raw TCP tunnel ports listen.
    pub tcp_addr: std::net::IpAddr,
    /// Base domain.
    pub domain: String,
    /// Scheme of printed URLs.
    pub public_scheme: String,
    /// Port of printed URLs; `None` means the HTTP listener's actual port.
    pub public_port: Option<u16>,
    /// Auto-claim of free names.
    pub auto_claim: bool,
    /// Grace period.
    pub grace: Duration,
    /// Per-tunnel visitor connection cap.
    pub max_tunnel_connections: usize,
    /// Request head size limit.
    pub max_header_bytes: usize,
    /// Header count limit.
    pub max_headers: usize,
    /// Request head deadline.
    pub header_timeout: Duration,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// SSH keepalive interval.
    pub keepalive: Duration,
    /// Missed keepalives before a client is dropped.
    pub keepalive_max: usize,
    /// Deadline for SSH authentication.
    pub auth_timeout: Duration,
    /// Log filter.
    pub log: String,
}

impl Config {
    /// Merges file < env < flags (clap has already merged env under flags) and validates.
    pub fn load(args: &SettingsArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let a = args.clone();
        let data_dir = a
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("warren-data"));
        let database_url = a
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("warren.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres:")
            || database_url.starts_with("postgresql:"))
        {
            bail!("database_url: expected sqlite://PATH or postgres://…, got {database_url:?}");
        }
        let domain = a
            .domain
            .or(file.domain)
            .unwrap_or_else(|| "localhost".into())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.is_empty()
            || domain
                .split('.')
                .any(|l| warren_registry::names::validate(l).is_err() && l != "localhost")
        {
            bail!("domain: {domain:?} is not a valid domain name");
        }
        let public_scheme = a
            .public_scheme
            .or(file.public_scheme)
            .unwrap_or_else(|| "http".into());
        if public_scheme != "http" && public_scheme != "https" {
            bail!("public_scheme: expected http or https, got {public_scheme:?}");
        }
        let max_header_bytes = a
            .max_header_bytes
            .or(file.max_header_bytes)
            .unwrap_or(32 * 1024);
        if max_header_bytes < 8192 {
            bail!("max_header_bytes: must be at least 8192, got {max_header_bytes}");
        }
        let tls_files = match (a.tls_cert.or(file.tls_cert), a.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key: give both or neither"),
        };
        let tcp_ports = parse_range(
            &a.tcp_ports
                .or(file.tcp_ports)
                .unwrap_or_else(|| "20000-20999".into()),
        )
        .map_err(|e| anyhow::anyhow!("tcp_ports: {e}"))?;
        let http_addr: SocketAddr = a
            .http_addr
            .or(file.http_addr)
            .unwrap_or_else(|| ([127, 0, 0, 1], 8080).into());
        let positive = |name: &str, v: u64| -> Result<u64> {
            if v == 0 {
                bail!("{name}: must be greater than 0")
            } else {
                Ok(v)
            }
        };
        Ok(Self {
            database_url: Secret(database_url),
            ssh_addr: a
                .ssh_addr
                .or(file.ssh_addr)
                .unwrap_or_else(|| ([127, 0, 0, 1], 2222).into()),
            http_addr,
            https_addr: a
                .https_addr
                .or(file.https_addr)
                .unwrap_or_else(|| ([127, 0, 0, 1], 8443).into()),
            tls_files,
            public_tls_port: a.public_tls_port.or(file.public_tls_port),
            hsts_max_age: a.hsts_max_age.or(file.hsts_max_age),
            tcp_ports,
            tcp_addr: a.tcp_addr.or(file.tcp_addr).unwrap_or(http_addr.ip()),
            domain,
            public_scheme,
            public_port: a.public_port.or(file.public_port),
            auto_claim: a.auto_claim.or(file.auto_claim).unwrap_or(true),
            grace: Duration::from_secs(a.grace_secs.or(file.grace_secs).unwrap_or(600)),
            max_tunnel_connections: positive(
                "max_tunnel_connections",
                a.max_tunnel_connections
                    .or(file.max_tunnel_connections)
                    .unwrap_or(256) as u64,
            )? as usize,
            max_header_bytes,
            max_headers: positive(
                "max_headers",
                a.max_headers.or(file.max_headers).unwrap_or(100) as u64,
            )? as usize,
            header_timeout: Duration::from_secs(positive(
                "header_timeout_secs",
                a.header_timeout_secs
                    .or(file.header_timeout_secs)
                    .unwrap_or(20),
            )?),
            trusted_proxies: match (a.trusted_proxies, file.trusted_proxies) {
                (Some(nets), _) => nets,
                (None, Some(list)) => list
                    .iter()
                    .map(|s| parse_net(s))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?,
                (None, None) => Vec::new(),
            },
            keepalive: Duration::from_secs(positive(
                "keepalive_secs",
                a.keepalive_secs.or(file.keepalive_secs).unwrap_or(15),
            )?),
            keepalive_max: positive(
                "keepalive_max",
                a.keepalive_max.or(file.keepalive_max).unwrap_or(4) as u64,
            )? as usize,
            auth_timeout: Duration::from_secs(positive(
                "auth_timeout_secs",
                a.auth_timeout_secs.or(file.auth_timeout_secs).unwrap_or(30),
            )?),
            log: a.log.or(file.log).unwrap_or_else(|| "info".into()),
            data_dir,
        })
    }
}

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(toml: &str, args: SettingsArgs) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, toml)?;
        Config::load(&SettingsArgs {
            config: Some(path),
            ..args
        })
    }

    #[test]
    fn defaults_are_the_embedded_setup() -> Result<()> {
        let c = Config::load(&SettingsArgs::default())?;
        assert_eq!(c.ssh_addr.to_string(), "127.0.0.1:2222");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.database_url.0, "sqlite://warren-data/warren.db");
        assert!(c.auto_claim);
        assert_eq!(c.grace, Duration::from_secs(600));
        Ok(())
    }

    #[test]
    fn flags_win_over_file() -> Result<()> {
        let args = SettingsArgs {
            domain: Some("flag.example".into()),
            ..Default::default()
        };
        let c = with_file(
            "domain = \"file.example\"\nssh_addr = \"127.0.0.1:2022\"\n",
            args,
        )?;
        assert_eq!(c.domain, "flag.example");
        assert_eq!(c.ssh_addr.port(), 2022);
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = format!(
            "{:#}",
            with_file("sshaddr = \"x\"\n", SettingsArgs::default()).expect_err("error")
        );
        assert!(err.contains("sshaddr"), "{err}");
        let err = format!(
            "{:#}",
            with_file("ssh_addr = \"nope\"\n", SettingsArgs::default()).expect_err("error")
        );
        assert!(err.contains("ssh_addr"), "{err}");
        let err = format!(
            "{:#}",
            with_file("public_scheme = \"ftp\"\n", SettingsArgs::default()).expect_err("error")
        );
        assert!(err.contains("public_scheme"), "{err}");
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secret("postgres://warren:hunter2@db/warren".into());
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(s.redacted(), "postgres://warren:***@db/warren");
    }
}
