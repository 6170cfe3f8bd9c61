//! The broker's configuration: one typed struct, from a TOML file, `BROKER_*` variables and
//! flags, in that order of precedence (flags win). Every flag `--foo-bar` has the variable
//! `BROKER_FOO_BAR` and the TOML key `foo_bar`. Unknown keys and bad values are errors that name
//! the key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod args;
mod flood;
mod public;
mod secrets;

use anyhow::{Context, Result, bail};
use warren_edge::IpNet;

pub use args::SettingsArgs;
pub use flood::{FloodLimits, log as log_flood_limits};
pub use public::{AcmeConfig, DnsConfig, PublicConfig};
use secrets::SecretFiles;

/// A URL that may carry a password (the database URL): `Debug` does not show it, and
/// [`SecretUrl::redacted`] shows it without the password. Not `warren_dns::Secret`, which is
/// a plain secret (a token or a TSIG key).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

impl SecretUrl {
    /// The URL with any password replaced, for logs: the userinfo's (`user:pw@`) and a
    /// `password=` query parameter's (libpq and sqlx accept both).
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url.as_str(), None),
        };
        let mut out = match (base.find("://"), base.rfind('@')) {
            (Some(s), Some(at)) if at > s && base[s + 3..at].contains(':') => {
                let creds = &base[s + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                format!("{}{}:***{}", &base[..s + 3], user, &base[at..])
            }
            _ => base.to_owned(),
        };
        if let Some(query) = query {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (created if missing).
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: SecretUrl,
    /// Postgres connections pooled at most (`database_pool`).
    pub database_pool: u32,
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
    /// Redirect HTTP to HTTPS when certificates are configured.
    pub https_redirect: bool,
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
    /// Host owners give to ssh (the Connect page's commands).
    pub public_ssh_host: String,
    /// Port owners give to ssh; `None` means the SSH listener's actual port.
    pub public_ssh_port: Option<u16>,
    /// Auto-claim of free names.
    pub auto_claim: bool,
    /// Device pairing: unknown keys may ask to join an account through the console.
    pub pairing: bool,
    /// Grace period.
    pub grace: Duration,
    /// Per-tunnel visitor connection cap.
    pub max_tunnel_connections: usize,
    /// Bytes per second per tunnel each way (0: no limit).
    pub max_tunnel_bytes_per_sec: u64,
    /// What one tenant may hold: live tunnels and TCP ports (the registry's limits).
    pub owner_limits: warren_registry::OwnerLimits,
    /// Forwards per session, names and claims per user (the SSH side's limits).
    pub session_limits: warren_ssh::SessionLimits,
    /// Request head size limit.
    pub max_header_bytes: usize,
    /// Header count limit.
    pub max_headers: usize,
    /// Request head deadline.
    pub header_timeout: Duration,
    /// Response head deadline for origins.
    pub origin_timeout: Duration,
    /// Recent requests kept per HTTP tunnel (the registry's request log); 0 for none.
    pub request_log_entries: usize,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Load balancers whose connections start with a PROXY protocol header.
    pub proxy_protocol_from: Vec<IpNet>,
    /// SSH keepalive interval.
    pub keepalive: Duration,
    /// Missed keepalives before a client is dropped.
    pub keepalive_max: usize,
    /// Tunnel threads (`warren-shards`); 0 for none.
    pub tunnel_threads: usize,
    /// Deadline for SSH authentication.
    pub auth_timeout: Duration,
    /// Connection limits against floods (per IP, unauthenticated, pending).
    pub flood: FloodLimits,
    /// Log filter (`log`, else `RUST_LOG`, else the file's `log`, else `info`).
    pub log: String,
    /// Text or JSON log lines.
    pub log_format: crate::logging::LogFormat,
    /// How long in-flight visitor requests get to finish at SIGTERM.
    pub shutdown_grace: Duration,
    /// The console host's label (`console`), reserved from tenants.
    pub console_label: String,
    /// The admin listener, if on.
    pub admin_addr: Option<SocketAddr>,
    /// DNS and certificates: what going public needs.
    pub public: PublicConfig,
    /// Custom domains: how they are checked.
    pub domains: DomainConfig,
    /// Tunnel alerts and webhook deliveries (`alert_*`, `webhook_*`).
    pub alerts: warren_alerts::Settings,
    /// This node among the brokers on one database (`node_name`, `cluster_addr`,
    /// `node_lease_secs`).
    pub cluster: ClusterConfig,
}

/// This node's part in a cluster (see `warren-cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique among the nodes on one database.
    pub node_name: String,
    /// Where the other nodes reach this one, if said.
    pub cluster_addr: Option<String>,
    /// Where it listens for them (`cluster_listen`, else cluster_addr's port on every
    /// address); `None`: other nodes cannot forward visitors to this one.
    pub listen: Option<SocketAddr>,
    /// How long a node may miss heartbeats before it counts as dead.
    pub lease: Duration,
}

/// How custom domains are checked (`dns_resolvers`, `domain_*_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// Resolvers to ask; empty for the system's.
    pub resolvers: Vec<SocketAddr>,
    /// Check intervals and the grace period.
    pub intervals: warren_domains::Intervals,
}

impl Config {
    /// Merges file < env < flags (clap has already put flags over variables), reads every
    /// secret file, and validates: what `serve` runs on.
    pub fn load(args: &SettingsArgs) -> Result<Self> {
        Self::load_with(args, SecretFiles::All)
    }

    /// As [`Config::load`], for admin commands: of the secret files only the database's are
    /// read (see [`SecretFiles::DatabaseOnly`]).
    pub fn load_admin(args: &SettingsArgs) -> Result<Self> {
        Self::load_with(args, SecretFiles::DatabaseOnly)
    }

    fn load_with(args: &SettingsArgs, secret_files: SecretFiles) -> Result<Self> {
        let file = match config_file(args.config.as_deref(), DEFAULT_CONFIG_FILES) {
            Some(path) => read_file(&path)?,
            None => SettingsArgs::default(),
        };
        let file_log = file.log.clone();
        let a = secrets::resolve(args.clone().merge(file), secret_files)?;
        Self::from_settings(a, args.log.as_deref(), file_log.as_deref())
    }

    /// The checks and defaults, on settings already merged (file < env < flags) with their
    /// secret files read: touches no file, so the config fuzz target drives it with any TOML.
    /// `flag_log` and `file_log` are the log filters given by flag and by file, which rank
    /// around `RUST_LOG`.
    pub fn from_settings(
        a: SettingsArgs,
        flag_log: Option<&str>,
        file_log: Option<&str>,
    ) -> Result<Self> {
        let data_dir = a
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("warren-data"));
        let database_url = a
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("warren.db").display()));
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            // Redacted: whatever was given may carry a password (`mysql://root:pw@…`).
            bail!(
                "database_url: expected sqlite://PATH or postgres://…, got {:?}",
                SecretUrl(database_url).redacted()
            );
        }
        let domain = a
            .domain
            .clone()
            .unwrap_or_else(|| "localhost".into())
            .trim_end_matches('.')
            .to_ascii_lowercase();
        // DNS label rules; the reserved words and the look-alike guard are for tenants' names,
        // not the operator's own (internationalised) domain.
        let label_ok = |l: &str| {
            use warren_registry::names::NameError;
            matches!(
                warren_registry::names::validate(l),
                Ok(()) | Err(NameError::Reserved(_) | NameError::LookAlike(_))
            )
        };
        if domain.is_empty() || !domain.split('.').all(label_ok) {
            bail!("domain: {domain:?} is not a valid domain name");
        }
        let console_host = a
            .console_host
            .clone()
            .unwrap_or_else(|| format!("console.{domain}"))
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let console_label = match console_host.strip_suffix(&format!(".{domain}")) {
            Some(l) if !l.contains('.') && label_ok(l) => l.to_owned(),
            _ => bail!(
                "console_host: {console_host:?} must be one label under the domain {domain:?} (e.g. console.{domain})"
            ),
        };
        let admin_addr = match a.admin_addr.as_deref().map(str::trim) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            Some("off") => None,
            Some(s) => Some(
                s.parse::<SocketAddr>()
                    .map_err(|_| anyhow::anyhow!("admin_addr: {s:?} is not ADDR:PORT (or off)"))?,
            ),
        };
        let max_header_bytes = a.max_header_bytes.unwrap_or(32 * 1024);
        if max_header_bytes < 8192 {
            bail!("max_header_bytes: must be at least 8192, got {max_header_bytes}");
        }
        let public = PublicConfig::load(&a, &domain)?;
        let flood = FloodLimits::load(&a)?;
        let tls_files = match (a.tls_cert, a.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key: give both or neither"),
        };
        let tcp_ports = parse_range(a.tcp_ports.as_deref().unwrap_or("20000-20999"))
            .map_err(|e| anyhow::anyhow!("tcp_ports: {e}"))?;
        let http_addr = a.http_addr.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into());
        let tls_sources = tls_files.is_some() || public.acme.is_some();
        let public_scheme = a
            .public_scheme
            .unwrap_or_else(|| if tls_sources { "https" } else { "http" }.into());
        if public_scheme != "http" && public_scheme != "https" {
            bail!("public_scheme: expected http or https, got {public_scheme:?}");
        }
        let positive = |name: &str, v: u64| -> Result<u64> {
            if v == 0 {
                bail!("{name}: must be greater than 0")
            } else {
                Ok(v)
            }
        };
        let public_ssh_host = a.public_ssh_host.clone().unwrap_or_else(|| domain.clone());
        Ok(Self {
            database_url: SecretUrl(database_url),
            database_pool: positive(
                "database_pool",
                a.database_pool
                    .map_or(warren_store::DEFAULT_POOL as u64, u64::from),
            )? as u32,
            ssh_addr: a.ssh_addr.unwrap_or_else(|| ([127, 0, 0, 1], 2222).into()),
            http_addr,
            https_addr: a
                .https_addr
                .unwrap_or_else(|| ([127, 0, 0, 1], 8443).into()),
            tls_files,
            public_tls_port: a.public_tls_port,
            hsts_max_age: a.hsts_max_age,
            https_redirect: a.https_redirect.unwrap_or(true),
            tcp_ports,
            tcp_addr: a.tcp_addr.unwrap_or(http_addr.ip()),
            domain,
            public_scheme,
            public_port: a.public_port,
            public_ssh_host,
            public_ssh_port: a.public_ssh_port,
            auto_claim: a.auto_claim.unwrap_or(true),
            pairing: a.pairing.unwrap_or(true),
            grace: Duration::from_secs(a.grace_secs.unwrap_or(600)),
            max_tunnel_connections: positive(
                "max_tunnel_connections",
                a.max_tunnel_connections.unwrap_or(256) as u64,
            )? as usize,
            max_tunnel_bytes_per_sec: a.max_tunnel_bytes_per_sec.unwrap_or(0),
            owner_limits: warren_registry::OwnerLimits {
                routes: positive(
                    "max_forwards_per_user",
                    a.max_forwards_per_user.unwrap_or(25) as u64,
                )? as usize,
                tcp_ports: a.max_tcp_ports_per_user.unwrap_or(5),
            },
            session_limits: {
                let d = warren_ssh::SessionLimits::default();
                warren_ssh::SessionLimits {
                    forwards_per_session: positive(
                        "max_forwards_per_session",
                        a.max_forwards_per_session.unwrap_or(d.forwards_per_session) as u64,
                    )? as usize,
                    names_per_user: a.max_names_per_user.unwrap_or(d.names_per_user),
                    claims_per_hour: a.max_claims_per_hour.unwrap_or(d.claims_per_hour),
                }
            },
            max_header_bytes,
            max_headers: positive("max_headers", a.max_headers.unwrap_or(100) as u64)? as usize,
            header_timeout: Duration::from_secs(positive(
                "header_timeout_secs",
                a.header_timeout_secs.unwrap_or(20),
            )?),
            origin_timeout: Duration::from_secs(positive(
                "origin_timeout_secs",
                a.origin_timeout_secs.unwrap_or(300),
            )?),
            request_log_entries: a
                .request_log_entries
                .unwrap_or(warren_registry::DEFAULT_REQUEST_LOG_ENTRIES),
            trusted_proxies: a.trusted_proxies.unwrap_or_default(),
            proxy_protocol_from: a.proxy_protocol_from.unwrap_or_default(),
            keepalive: Duration::from_secs(positive(
                "keepalive_secs",
                a.keepalive_secs.unwrap_or(15),
            )?),
            keepalive_max: positive("keepalive_max", a.keepalive_max.unwrap_or(4) as u64)? as usize,
            tunnel_threads: a.tunnel_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }),
            auth_timeout: Duration::from_secs(positive(
                "auth_timeout_secs",
                a.auth_timeout_secs.unwrap_or(30),
            )?),
            flood,
            domains: DomainConfig {
                resolvers: warren_domains::parse_resolvers(
                    a.dns_resolvers.as_deref().unwrap_or_default(),
                )?,
                intervals: warren_domains::Intervals {
                    pending: positive("domain_pending_secs", a.domain_pending_secs.unwrap_or(30))?
                        as i64,
                    recheck: positive(
                        "domain_recheck_secs",
                        a.domain_recheck_secs.unwrap_or(86_400),
                    )? as i64,
                    grace: a.domain_grace_secs.unwrap_or(86_400) as i64,
                },
            },
            log: crate::logging::filter(
                flag_log,
                std::env::var("RUST_LOG").ok().as_deref(),
                file_log,
            ),
            log_format: a.log_format.unwrap_or_default(),
            shutdown_grace: Duration::from_secs(a.shutdown_grace_secs.unwrap_or(10)),
            alerts: {
                let d = warren_alerts::Settings::default();
                warren_alerts::Settings {
                    down_after: a
                        .alert_down_after_secs
                        .map_or(d.down_after, Duration::from_secs),
                    allow_private: a.webhook_allow_private.unwrap_or(d.allow_private),
                    max_attempts: positive(
                        "webhook_max_attempts",
                        u64::from(a.webhook_max_attempts.unwrap_or(d.max_attempts)),
                    )? as u32,
                    backoff: a
                        .webhook_backoff_ms
                        .map_or(d.backoff, Duration::from_millis),
                    timeout: Duration::from_secs(positive(
                        "webhook_timeout_secs",
                        a.webhook_timeout_secs.unwrap_or(d.timeout.as_secs()),
                    )?),
                    ..d
                }
            },
            cluster: ClusterConfig {
                node_name: node_name(a.node_name.as_deref())?,
                cluster_addr: match a.cluster_addr.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(addr) => Some(cluster_addr(addr)?),
                },
                listen: a.cluster_listen.or_else(|| {
                    let addr = a.cluster_addr.as_deref()?.trim();
                    let port = addr.rsplit_once(':')?.1.parse::<u16>().ok()?;
                    Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                }),
                lease: Duration::from_secs(positive(
                    "node_lease_secs",
                    a.node_lease_secs.unwrap_or(10),
                )?),
            },
            console_label,
            admin_addr,
            public,
            data_dir,
        })
    }
}

/// Where `serve` and every admin command look for a config file when none is named, in order:
/// the packaged location, then the current directory. One list for all commands, so an admin
/// command run on the server reads the same database as the running broker.
pub const DEFAULT_CONFIG_FILES: &[&str] = &["/etc/warren/broker.toml", "broker.toml"];

/// The config file in force: the one named (`--config`, `BROKER_CONFIG`), else the first of
/// `defaults` that exists.
pub fn config_file(named: Option<&Path>, defaults: &[&str]) -> Option<PathBuf> {
    match named {
        Some(path) => Some(path.to_owned()),
        None => defaults.iter().map(PathBuf::from).find(|p| p.is_file()),
    }
}

/// `node_name`, or the host name: letters, digits, `-`, `_` and `.`, at most 63, as it is shown
/// in `broker nodes` and written to the database.
fn node_name(given: Option<&str>) -> Result<String> {
    let name = match given.map(str::trim) {
        Some(n) => n.to_owned(),
        None => warren_cluster::host_name(),
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 || !name.chars().all(ok) {
        bail!(
            "node_name: {name:?} must be 1-63 letters, digits, '-', '_' or '.' (set BROKER_NODE_NAME)"
        );
    }
    Ok(name)
}

/// `HOST:PORT`, where HOST is a name or an address (IPv6 in brackets).
fn cluster_addr(addr: &str) -> Result<String> {
    let port_ok = addr
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| p > 0);
    if !port_ok || addr.contains(char::is_whitespace) {
        bail!("cluster_addr: {addr:?} is not HOST:PORT");
    }
    Ok(addr.to_owned())
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

fn read_file(path: &Path) -> Result<SettingsArgs> {
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
    fn the_example_production_config_loads_and_says_what_it_says() -> Result<()> {
        // deploy/broker.toml is what an operator copies: it must keep validating as settings
        // come and go, and mean what its comments say.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/broker.toml");
        let c = Config::load(&SettingsArgs {
            config: Some(path),
            ..SettingsArgs::default()
        })?;
        assert_eq!(c.domain, "tunnel.example.com");
        assert_eq!(c.console_label, "console");
        assert_eq!(c.ssh_addr, "0.0.0.0:2222".parse::<SocketAddr>()?);
        assert_eq!(c.admin_addr, Some("127.0.0.1:9090".parse::<SocketAddr>()?));
        assert_eq!(c.public_scheme, "https", "ACME on: the URLs are https");
        assert_eq!(c.tcp_ports, 20000..=20999);
        assert!(c.public.acme.is_some());
        assert_eq!(c.cluster.lease, Duration::from_secs(10));
        assert_eq!(
            c.cluster.node_name,
            warren_cluster::host_name(),
            "node_name: the host name"
        );
        Ok(())
    }

    #[test]
    fn node_settings_are_checked() -> Result<()> {
        let c = Config::load(&SettingsArgs {
            node_name: Some("warren-2".into()),
            cluster_addr: Some("10.0.0.12:7000".into()),
            node_lease_secs: Some(3),
            ..SettingsArgs::default()
        })?;
        assert_eq!(
            c.cluster,
            ClusterConfig {
                node_name: "warren-2".into(),
                cluster_addr: Some("10.0.0.12:7000".into()),
                listen: Some("0.0.0.0:7000".parse()?),
                lease: Duration::from_secs(3),
            }
        );
        let c = Config::load(&SettingsArgs {
            cluster_listen: Some("127.0.0.1:0".parse()?),
            ..SettingsArgs::default()
        })?;
        assert_eq!(
            (c.cluster.cluster_addr, c.cluster.listen),
            (None, Some("127.0.0.1:0".parse()?)),
            "announced as bound"
        );
        for (name, addr, lease, says) in [
            ("a b", "", 10, "node_name"),
            ("", "", 10, "node_name"),
            ("n1", "10.0.0.1", 10, "cluster_addr"),
            ("n1", ":7000", 10, "cluster_addr"),
            ("n1", "", 0, "node_lease_secs"),
        ] {
            let e = Config::load(&SettingsArgs {
                node_name: Some(name.into()),
                cluster_addr: Some(addr.into()),
                node_lease_secs: Some(lease),
                ..SettingsArgs::default()
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(e.starts_with(says), "{name:?} {addr:?} {lease}: {e:?}");
        }
        Ok(())
    }

    #[test]
    fn a_config_file_is_found_in_the_default_places() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let second = dir.path().join("broker.toml");
        let first = dir.path().join("missing.toml");
        let defaults = [
            first.to_str().unwrap_or_default(),
            second.to_str().unwrap_or_default(),
        ];
        assert_eq!(config_file(None, &defaults), None);
        std::fs::write(&second, "")?;
        assert_eq!(config_file(None, &defaults), Some(second.clone()));
        let named = Path::new("/nonexistent/named.toml");
        assert_eq!(config_file(Some(named), &defaults), Some(named.to_owned()));
        Ok(())
    }

    #[test]
    fn defaults_are_the_embedded_setup() -> Result<()> {
        let c = Config::load(&SettingsArgs::default())?;
        assert_eq!(c.ssh_addr.to_string(), "127.0.0.1:2222");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.database_url.0, "sqlite://warren-data/warren.db");
        assert_eq!(c.https_addr.to_string(), "127.0.0.1:8443");
        assert!(c.public.acme.is_none() && matches!(c.public.dns, DnsConfig::None));
        assert!(c.auto_claim);
        assert!(c.pairing);
        assert_eq!(c.grace, Duration::from_secs(600));
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(c.tunnel_threads, cores);
        assert_eq!(
            with_file("tunnel_threads = 0\n", SettingsArgs::default())?.tunnel_threads,
            0
        );
        assert_eq!(c.request_log_entries, 1000);
        assert_eq!(
            with_file("request_log_entries = 0\n", SettingsArgs::default())?.request_log_entries,
            0
        );
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
    fn lists_and_public_settings_from_the_file() -> Result<()> {
        let c = with_file(
            "trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]\nproxy_protocol_from = [\"10.0.0.5\"]\ndns_provider = \"builtin\"\npublic_ipv4 = \"203.0.113.7\"\nacme_directory = \"https://ca.test/dir\"\n",
            SettingsArgs::default(),
        )?;
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.proxy_protocol_from, ["10.0.0.5/32".parse::<IpNet>()?]);
        assert!(matches!(c.public.dns, DnsConfig::Builtin { .. }));
        let acme = c.public.acme.as_ref().expect("acme");
        assert!(
            acme.wildcard,
            "a DNS provider turns the wildcard on by default"
        );
        assert_eq!(
            (acme.budget.per_week, acme.budget.per_owner_per_week),
            (40, 10),
            "below Let's Encrypt's 50 a week by default"
        );
        assert_eq!(
            c.public_scheme, "https",
            "certificates make printed URLs https"
        );
        Ok(())
    }

    #[test]
    fn the_order_budget_from_file_and_flags() -> Result<()> {
        let args = SettingsArgs {
            acme_orders_per_user_per_week: Some(1),
            ..Default::default()
        };
        let c = with_file(
            "acme_directory = \"https://ca.test/dir\"\nacme_orders_per_week = 2\nacme_orders_per_user_per_week = 2\n",
            args,
        )?;
        let budget = c.public.acme.as_ref().expect("acme").budget;
        assert_eq!((budget.per_week, budget.per_owner_per_week), (2, 1));
        Ok(())
    }

    #[test]
    fn public_settings_are_checked() {
        let err = |toml: &str| {
            format!(
                "{:#}",
                with_file(toml, SettingsArgs::default()).expect_err("error")
            )
        };
        assert!(err("dns_provider = \"route53\"\n").contains("dns_provider"));
        assert!(err("dns_provider = \"builtin\"\n").contains("public_ipv4"));
        assert!(
            err("dns_provider = \"cloudflare\"\npublic_ipv4 = \"1.2.3.4\"\n")
                .contains("cloudflare_token")
        );
        assert!(
            err("acme_directory = \"https://x\"\nacme_challenge = \"dns-01\"\n")
                .contains("acme_challenge")
        );
        assert!(
            err("acme_directory = \"https://x\"\nacme_wildcard = true\n").contains("acme_wildcard")
        );
        assert!(
            err("acme_directory = \"https://x\"\nacme_orders_per_week = 0\n")
                .contains("acme_orders_per_week")
        );
        assert!(
            err("acme_directory = \"https://x\"\nacme_orders_per_week = 5\nacme_orders_per_user_per_week = 6\n")
                .contains("acme_orders_per_user_per_week")
        );
        assert!(err("tls_cert = \"/x\"\n").contains("tls_key"));
        assert!(err("tcp_ports = \"9-1\"\n").contains("tcp_ports"));
    }

    #[test]
    fn secrets_are_masked() {
        let s = SecretUrl("postgres://warren:hunter2@db/warren".into());
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(s.redacted(), "postgres://warren:***@db/warren");
        let q = SecretUrl("postgres://warren@db/warren?sslmode=require&password=hunter2".into());
        assert_eq!(
            q.redacted(),
            "postgres://warren@db/warren?sslmode=require&password=***"
        );
        assert!(!format!("{q:?}").contains("hunter2"));
    }
}
