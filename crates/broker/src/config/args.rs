//! Every setting as one optional field: a flag (and, through clap, a `BROKER_*` variable) and a
//! TOML key at once, so the three sources cannot drift apart. `merge` lays flags over the file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use warren_edge::IpNet;

use crate::logging::LogFormat;

/// Declares the settings struct and its `merge` from one list of fields.
macro_rules! settings {
    ($( $(#[$meta:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Settings from flags, `BROKER_*` variables or the TOML file; all optional (absent
        /// ones fall back to the next source, then to the defaults in `Config::load`).
        #[derive(Debug, Default, Clone, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct SettingsArgs {
            /// TOML config file.
            #[arg(long, global = true, env = "BROKER_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $( $(#[$meta])* pub $field: Option<$ty>, )*
        }

        impl SettingsArgs {
            /// `self` (flags and variables) over `file`.
            pub fn merge(self, file: SettingsArgs) -> SettingsArgs {
                SettingsArgs { config: self.config, $( $field: self.$field.or(file.$field), )* }
            }
        }
    };
}

settings! {
    /// Where the SQLite database, the SSH host key and the certificate key live [default: ./warren-data].
    #[arg(long, global = true, env = "BROKER_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…` [default: sqlite://DATA_DIR/warren.db].
    #[arg(long, global = true, env = "BROKER_DATABASE_URL", value_name = "URL")]
    database_url: String,
    /// File holding database_url, so a password in it is not on the command line; a relative
    /// name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential) when set.
    #[arg(long, global = true, env = "BROKER_DATABASE_URL_FILE", value_name = "FILE")]
    database_url_file: PathBuf,
    /// File holding the Postgres password, added to database_url (which names the user).
    #[arg(long, global = true, env = "BROKER_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    database_password_file: PathBuf,
    /// Postgres connections this broker pools at most; each node also holds 2 more (its
    /// `LISTEN` and the ACME lease), so Postgres's max_connections must cover every node's
    /// database_pool + 2 [default: 16].
    #[arg(long, global = true, env = "BROKER_DATABASE_POOL", value_name = "N")]
    database_pool: u32,
    /// Where relative `*_file` names are found when `$CREDENTIALS_DIRECTORY` is not set (a
    /// shell: `broker check`, admin commands) [default: /etc/warren/credentials, if it exists;
    /// else the current directory].
    #[arg(long, global = true, env = "BROKER_CREDENTIALS_DIR", value_name = "DIR")]
    credentials_dir: PathBuf,
    /// SSH listener [default: 127.0.0.1:2222].
    #[arg(long, global = true, env = "BROKER_SSH_ADDR", value_name = "ADDR")]
    ssh_addr: SocketAddr,
    /// HTTP listener for visitors [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "BROKER_HTTP_ADDR", value_name = "ADDR")]
    http_addr: SocketAddr,
    /// HTTPS listener for visitors (termination and passthrough) [default: 127.0.0.1:8443].
    #[arg(long, global = true, env = "BROKER_HTTPS_ADDR", value_name = "ADDR")]
    https_addr: SocketAddr,
    /// Operator-supplied certificate chain (PEM), served for the names it covers.
    #[arg(long, global = true, env = "BROKER_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "BROKER_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,
    /// Base domain: tunnels are NAME.DOMAIN [default: localhost].
    #[arg(long, global = true, env = "BROKER_DOMAIN")]
    domain: String,
    /// Scheme of the URLs printed to users [default: https when certificates are configured, else http].
    #[arg(long, global = true, env = "BROKER_PUBLIC_SCHEME", value_name = "SCHEME")]
    public_scheme: String,
    /// Port of printed http:// URLs [default: the HTTP listener's port].
    #[arg(long, global = true, env = "BROKER_PUBLIC_PORT", value_name = "PORT")]
    public_port: u16,
    /// Host owners connect to with ssh, as the console's Connect page writes it [default: the domain].
    #[arg(long, global = true, env = "BROKER_PUBLIC_SSH_HOST", value_name = "HOST")]
    public_ssh_host: String,
    /// Port owners connect to with ssh (behind a port forward or load balancer) [default: the SSH listener's port].
    #[arg(long, global = true, env = "BROKER_PUBLIC_SSH_PORT", value_name = "PORT")]
    public_ssh_port: u16,
    /// Port of printed https:// URLs [default: the HTTPS listener's port].
    #[arg(long, global = true, env = "BROKER_PUBLIC_TLS_PORT", value_name = "PORT")]
    public_tls_port: u16,
    /// Redirect plain HTTP to HTTPS (308) when certificates are configured [default: true].
    #[arg(long, global = true, env = "BROKER_HTTPS_REDIRECT", value_name = "BOOL")]
    https_redirect: bool,
    /// Send Strict-Transport-Security with this max-age on HTTPS responses [default: off].
    #[arg(long, global = true, env = "BROKER_HSTS_MAX_AGE", value_name = "SECS")]
    hsts_max_age: u64,
    /// Public ports for raw TCP tunnels (`-R tcp:0:…`), FIRST-LAST [default: 20000-20999].
    #[arg(long, global = true, env = "BROKER_TCP_PORTS", value_name = "RANGE")]
    tcp_ports: String,
    /// Address the raw TCP ports listen on [default: the HTTP listener's address].
    #[arg(long, global = true, env = "BROKER_TCP_ADDR", value_name = "IP")]
    tcp_addr: IpAddr,
    /// Let `-R NAME:80:…` claim a free NAME for the user [default: true].
    #[arg(long, global = true, env = "BROKER_AUTO_CLAIM", value_name = "BOOL")]
    auto_claim: bool,
    /// Let an unknown SSH key ask to join an account: its session shows a code that a signed-in
    /// user approves on the console's /pair page [default: true].
    #[arg(long, global = true, env = "BROKER_PAIRING", value_name = "BOOL")]
    pairing: bool,
    /// Seconds a name stays with its owner after the tunnel drops [default: 600].
    #[arg(long, global = true, env = "BROKER_GRACE_SECS", value_name = "SECS")]
    grace_secs: u64,
    /// Concurrent visitor connections per tunnel [default: 256].
    #[arg(long, global = true, env = "BROKER_MAX_TUNNEL_CONNECTIONS", value_name = "N")]
    max_tunnel_connections: usize,
    /// Bytes per second each tunnel may move each way (upload, download), shared by its
    /// visitors; past it they are slowed, not refused; 0 for no limit [default: 0].
    #[arg(long, global = true, env = "BROKER_MAX_TUNNEL_BYTES_PER_SEC", value_name = "BYTES")]
    max_tunnel_bytes_per_sec: u64,
    /// Live tunnels one user may hold at once, over all sessions [default: 25].
    #[arg(long, global = true, env = "BROKER_MAX_FORWARDS_PER_USER", value_name = "N")]
    max_forwards_per_user: usize,
    /// Forwards one SSH session may hold [default: 25].
    #[arg(long, global = true, env = "BROKER_MAX_FORWARDS_PER_SESSION", value_name = "N")]
    max_forwards_per_session: usize,
    /// Public TCP ports one user may hold, live or within the grace period [default: 5].
    #[arg(long, global = true, env = "BROKER_MAX_TCP_PORTS_PER_USER", value_name = "N")]
    max_tcp_ports_per_user: usize,
    /// Names one user may hold reserved before auto-claim refuses more [default: 50].
    #[arg(long, global = true, env = "BROKER_MAX_NAMES_PER_USER", value_name = "N")]
    max_names_per_user: usize,
    /// Names one user may auto-claim per hour; 0 for no limit [default: 20].
    #[arg(long, global = true, env = "BROKER_MAX_CLAIMS_PER_HOUR", value_name = "N")]
    max_claims_per_hour: u32,
    /// Request head size limit in bytes [default: 32768].
    #[arg(long, global = true, env = "BROKER_MAX_HEADER_BYTES", value_name = "BYTES")]
    max_header_bytes: usize,
    /// Request header count limit [default: 100].
    #[arg(long, global = true, env = "BROKER_MAX_HEADERS", value_name = "N")]
    max_headers: usize,
    /// Seconds a visitor has to send a request head [default: 20].
    #[arg(long, global = true, env = "BROKER_HEADER_TIMEOUT_SECS", value_name = "SECS")]
    header_timeout_secs: u64,
    /// Seconds the local service behind a tunnel has to send its response head before the
    /// visitor gets 504; a body may then stream for as long as it takes [default: 300].
    #[arg(long, global = true, env = "BROKER_ORIGIN_TIMEOUT_SECS", value_name = "SECS")]
    origin_timeout_secs: u64,
    /// Recent requests kept in memory per HTTP tunnel, for its owner to list and follow; 0
    /// records none [default: 1000].
    #[arg(long, global = true, env = "BROKER_REQUEST_LOG_ENTRIES", value_name = "N")]
    request_log_entries: usize,
    /// Comma-separated IPs/CIDRs whose X-Forwarded-* headers are trusted [default: none].
    #[arg(long, global = true, env = "BROKER_TRUSTED_PROXIES", value_delimiter = ',', value_name = "CIDRS", value_parser = parse_net)]
    #[serde(default, deserialize_with = "nets")]
    trusted_proxies: Vec<IpNet>,
    /// Comma-separated IPs/CIDRs of load balancers that start every connection to the SSH,
    /// HTTP, HTTPS and TCP tunnel ports with a PROXY protocol header (v1 or v2; HAProxy's
    /// send-proxy-v2) naming the client; connections from them without one are closed. Limits,
    /// IP rules, X-Forwarded-For and logs then see the client [default: none].
    #[arg(long, global = true, env = "BROKER_PROXY_PROTOCOL_FROM", value_delimiter = ',', value_name = "CIDRS", value_parser = parse_net)]
    #[serde(default, deserialize_with = "nets")]
    proxy_protocol_from: Vec<IpNet>,
    /// Seconds between SSH keepalives [default: 15].
    #[arg(long, global = true, env = "BROKER_KEEPALIVE_SECS", value_name = "SECS")]
    keepalive_secs: u64,
    /// Unanswered keepalives before a client counts as dead [default: 4].
    #[arg(long, global = true, env = "BROKER_KEEPALIVE_MAX", value_name = "N")]
    keepalive_max: usize,
    /// Threads that carry tunnel traffic, each tunnel on one of them; 0 runs tunnels on the
    /// shared work-stealing runtime instead [default: one per core].
    #[arg(long, global = true, env = "BROKER_TUNNEL_THREADS", value_name = "N")]
    tunnel_threads: usize,
    /// SSH connections from one IP (IPv6: one /64) not yet authenticated; past it a new one is
    /// closed at once [default: 10].
    #[arg(long, global = true, env = "BROKER_SSH_MAX_STARTUPS_PER_IP", value_name = "N")]
    ssh_max_startups_per_ip: u32,
    /// SSH connections not yet authenticated, over all IPs; past it, strangers are refused and
    /// exempt sources (`limit_exempt`) wait their turn [default: open-file limit / 16, 8 to
    /// 200].
    #[arg(long, global = true, env = "BROKER_SSH_MAX_STARTUPS", value_name = "N")]
    ssh_max_startups: usize,
    /// New SSH connections one IP may open per minute (a burst of as many, then one every
    /// 60/N s); 0 for no limit [default: 60].
    #[arg(long, global = true, env = "BROKER_SSH_CONNECTIONS_PER_MINUTE_PER_IP", value_name = "N")]
    ssh_connections_per_minute_per_ip: u32,
    /// Failed SSH authentications (keys refused) one IP (IPv6: one /64) may have per minute;
    /// past it every connection from it is refused, a registered key included, until its
    /// minute ends; 0 for no limit [default: 30].
    #[arg(long, global = true, env = "BROKER_SSH_AUTH_FAILURES_PER_MINUTE_PER_IP", value_name = "N")]
    ssh_auth_failures_per_minute_per_ip: u32,
    /// Visitor connections one IP may hold open at once, over every listener (429 on HTTP,
    /// close on HTTPS and TCP) [default: open-file limit / 8, 8 to 256].
    #[arg(long, global = true, env = "BROKER_MAX_VISITOR_CONNECTIONS_PER_IP", value_name = "N")]
    max_visitor_connections_per_ip: u32,
    /// New visitor connections one IP may open per second after its burst; 0 for no limit
    /// [default: 50].
    #[arg(long, global = true, env = "BROKER_VISITOR_CONNECTIONS_PER_SEC_PER_IP", value_name = "N")]
    visitor_connections_per_sec_per_ip: u32,
    /// New visitor connections one IP may open at once before the per-second rate applies
    /// [default: 200].
    #[arg(long, global = true, env = "BROKER_VISITOR_CONNECTION_BURST_PER_IP", value_name = "N")]
    visitor_connection_burst_per_ip: u32,
    /// Visitor connections that have not sent a whole request head (or ClientHello) yet, over
    /// all IPs (503 on HTTP, close on HTTPS) [default: open-file limit / 4, 16 to 10000].
    #[arg(long, global = true, env = "BROKER_MAX_PENDING_VISITOR_CONNECTIONS", value_name = "N")]
    max_pending_visitor_connections: usize,
    /// Comma-separated IPs/CIDRs none of the connection limits above apply to: the operator's
    /// own processes (a reverse proxy or load balancer in front, health checks)
    /// [default: 127.0.0.1,::1].
    #[arg(long, global = true, env = "BROKER_LIMIT_EXEMPT", value_delimiter = ',', value_name = "CIDRS", value_parser = parse_net)]
    #[serde(default, deserialize_with = "nets")]
    limit_exempt: Vec<IpNet>,
    /// Seconds a new SSH connection has to authenticate [default: 30].
    #[arg(long, global = true, env = "BROKER_AUTH_TIMEOUT_SECS", value_name = "SECS")]
    auth_timeout_secs: u64,
    /// ACME directory URL; unset means no certificates are ordered [default: unset].
    #[arg(long, global = true, env = "BROKER_ACME_DIRECTORY", value_name = "URL")]
    acme_directory: String,
    /// Extra root CA (PEM) trusted for the ACME server's own HTTPS (e.g. Pebble's).
    #[arg(long, global = true, env = "BROKER_ACME_ROOT_CA", value_name = "FILE")]
    acme_root_ca: PathBuf,
    /// Contact e-mail given to the CA.
    #[arg(long, global = true, env = "BROKER_ACME_EMAIL", value_name = "EMAIL")]
    acme_email: String,
    /// Challenge for per-name certificates: http-01, tls-alpn-01 or dns-01 [default: http-01].
    #[arg(long, global = true, env = "BROKER_ACME_CHALLENGE", value_name = "KIND")]
    acme_challenge: String,
    /// Order one wildcard *.DOMAIN (DNS-01) for random names [default: true with a DNS provider].
    #[arg(long, global = true, env = "BROKER_ACME_WILDCARD", value_name = "BOOL")]
    acme_wildcard: bool,
    /// Certificates the broker may have issued per 7 days, renewals included; first orders past
    /// it wait until the window slides. Keep it below the CA's limit (Let's Encrypt: 50 per
    /// registered domain per week) [default: 40].
    #[arg(long, global = true, env = "BROKER_ACME_ORDERS_PER_WEEK", value_name = "N")]
    acme_orders_per_week: u32,
    /// Of acme_orders_per_week, how many one user's names may take [default: 10].
    #[arg(long, global = true, env = "BROKER_ACME_ORDERS_PER_USER_PER_WEEK", value_name = "N")]
    acme_orders_per_user_per_week: u32,
    /// Base64 32-byte key encrypting certificate keys at rest [default: DATA_DIR/cert-key, generated].
    #[arg(long, global = true, env = "BROKER_CERT_KEY", value_name = "BASE64")]
    cert_key: String,
    /// File holding cert_key (relative: in $CREDENTIALS_DIRECTORY when set).
    #[arg(long, global = true, env = "BROKER_CERT_KEY_FILE", value_name = "FILE")]
    cert_key_file: PathBuf,
    /// Seconds a DNS-01 order waits for its TXT record to show at the zone's authoritative
    /// servers before it fails (and is retried later) [default: 120].
    #[arg(long, global = true, env = "BROKER_DNS_PROPAGATION_TIMEOUT_SECS", value_name = "SECS")]
    dns_propagation_timeout_secs: u64,
    /// Servers (IP:PORT, comma-separated) to ask for DNS-01 records instead of the provider's
    /// own (Cloudflare: the zone's name servers; RFC 2136: rfc2136_server): add secondaries
    /// here [default: the provider's].
    #[arg(long, global = true, env = "BROKER_DNS_PROPAGATION_SERVERS", value_delimiter = ',', value_name = "ADDRS")]
    dns_propagation_servers: Vec<SocketAddr>,
    /// DNS provider: builtin, cloudflare, rfc2136 or none [default: none].
    #[arg(long, global = true, env = "BROKER_DNS_PROVIDER", value_name = "KIND")]
    dns_provider: String,
    /// Where the built-in DNS server listens (UDP and TCP) [default: 127.0.0.1:5353].
    #[arg(long, global = true, env = "BROKER_DNS_ADDR", value_name = "ADDR")]
    dns_addr: SocketAddr,
    /// NS host names the built-in server announces [default: ns1.DOMAIN].
    #[arg(long, global = true, env = "BROKER_DNS_NS", value_delimiter = ',', value_name = "NAMES")]
    dns_ns: Vec<String>,
    /// What A records point at.
    #[arg(long, global = true, env = "BROKER_PUBLIC_IPV4", value_name = "IP")]
    public_ipv4: Ipv4Addr,
    /// What AAAA records point at.
    #[arg(long, global = true, env = "BROKER_PUBLIC_IPV6", value_name = "IP")]
    public_ipv6: Ipv6Addr,
    /// Cloudflare API token (Zone:Read, DNS:Edit).
    #[arg(long, global = true, env = "BROKER_CLOUDFLARE_TOKEN", value_name = "TOKEN")]
    cloudflare_token: String,
    /// File holding cloudflare_token (relative: in $CREDENTIALS_DIRECTORY when set).
    #[arg(long, global = true, env = "BROKER_CLOUDFLARE_TOKEN_FILE", value_name = "FILE")]
    cloudflare_token_file: PathBuf,
    /// Cloudflare zone name [default: DOMAIN].
    #[arg(long, global = true, env = "BROKER_CLOUDFLARE_ZONE", value_name = "ZONE")]
    cloudflare_zone: String,
    /// Cloudflare API base URL [default: https://api.cloudflare.com/client/v4].
    #[arg(long, global = true, env = "BROKER_CLOUDFLARE_API", value_name = "URL")]
    cloudflare_api: String,
    /// RFC 2136 server (BIND, Knot, PowerDNS) accepting TSIG-signed updates.
    #[arg(long, global = true, env = "BROKER_RFC2136_SERVER", value_name = "ADDR")]
    rfc2136_server: SocketAddr,
    /// RFC 2136 zone [default: DOMAIN].
    #[arg(long, global = true, env = "BROKER_RFC2136_ZONE", value_name = "ZONE")]
    rfc2136_zone: String,
    /// TSIG key name.
    #[arg(long, global = true, env = "BROKER_RFC2136_KEY_NAME", value_name = "NAME")]
    rfc2136_key_name: String,
    /// TSIG secret, base64.
    #[arg(long, global = true, env = "BROKER_RFC2136_SECRET", value_name = "BASE64")]
    rfc2136_secret: String,
    /// File holding rfc2136_secret (relative: in $CREDENTIALS_DIRECTORY when set).
    #[arg(long, global = true, env = "BROKER_RFC2136_SECRET_FILE", value_name = "FILE")]
    rfc2136_secret_file: PathBuf,
    /// TSIG algorithm: hmac-sha256, hmac-sha384 or hmac-sha512 [default: hmac-sha256].
    #[arg(long, global = true, env = "BROKER_RFC2136_ALGORITHM", value_name = "ALG")]
    rfc2136_algorithm: String,
    /// Host of the console and the REST API, a name under DOMAIN that no tenant can claim
    /// [default: console.DOMAIN].
    #[arg(long, global = true, env = "BROKER_CONSOLE_HOST", value_name = "HOST")]
    console_host: String,
    /// Listener for the API (and, later, metrics and health checks) for scripts on the box;
    /// `off` to disable [default: 127.0.0.1:9090].
    #[arg(long, global = true, env = "BROKER_ADMIN_ADDR", value_name = "ADDR")]
    admin_addr: String,
    /// DNS resolvers custom domains are checked with, IP or IP:PORT, comma-separated
    /// [default: the system's, from /etc/resolv.conf].
    #[arg(long, global = true, env = "BROKER_DNS_RESOLVERS", value_delimiter = ',', value_name = "ADDRS")]
    dns_resolvers: Vec<String>,
    /// Seconds between checks of a custom domain not yet proven (or failing within its grace)
    /// [default: 30].
    #[arg(long, global = true, env = "BROKER_DOMAIN_PENDING_SECS", value_name = "SECS")]
    domain_pending_secs: u64,
    /// Seconds between checks of a verified custom domain [default: 86400].
    #[arg(long, global = true, env = "BROKER_DOMAIN_RECHECK_SECS", value_name = "SECS")]
    domain_recheck_secs: u64,
    /// Seconds a custom domain whose proof is gone is still served [default: 86400].
    #[arg(long, global = true, env = "BROKER_DOMAIN_GRACE_SECS", value_name = "SECS")]
    domain_grace_secs: u64,
    /// Seconds a tunnel must stay gone before its webhooks get `tunnel.down`; a reconnect within
    /// them sends nothing [default: 60].
    #[arg(long, global = true, env = "BROKER_ALERT_DOWN_AFTER_SECS", value_name = "SECS")]
    alert_down_after_secs: u64,
    /// Let webhooks reach loopback, private and link-local addresses (receivers on the
    /// operator's own network); off, such URLs are refused [default: false].
    #[arg(long, global = true, env = "BROKER_WEBHOOK_ALLOW_PRIVATE", value_name = "BOOL")]
    webhook_allow_private: bool,
    /// Attempts per webhook delivery before it is given up [default: 8].
    #[arg(long, global = true, env = "BROKER_WEBHOOK_MAX_ATTEMPTS", value_name = "N")]
    webhook_max_attempts: u32,
    /// Ceiling of the first retry's random wait, in milliseconds; it doubles per attempt, up to
    /// an hour [default: 10000].
    #[arg(long, global = true, env = "BROKER_WEBHOOK_BACKOFF_MS", value_name = "MS")]
    webhook_backoff_ms: u64,
    /// Seconds one webhook attempt may take, connecting included [default: 10].
    #[arg(long, global = true, env = "BROKER_WEBHOOK_TIMEOUT_SECS", value_name = "SECS")]
    webhook_timeout_secs: u64,
    /// Log filter, as RUST_LOG; unset, RUST_LOG is read before the config file [default: info].
    #[arg(long, global = true, env = "BROKER_LOG", value_name = "FILTER")]
    log: String,
    /// Log lines as text (colours only on a terminal) or JSON, one object per line [default: text].
    #[arg(long, global = true, env = "BROKER_LOG_FORMAT", value_name = "FORMAT")]
    log_format: LogFormat,
    /// This node's name among the brokers that share one Postgres database; unique per node
    /// [default: the host name].
    #[arg(long, global = true, env = "BROKER_NODE_NAME", value_name = "NAME")]
    node_name: String,
    /// Where the other nodes reach this one (HOST:PORT), as `broker nodes` lists it [default:
    /// none].
    #[arg(long, global = true, env = "BROKER_CLUSTER_ADDR", value_name = "ADDR")]
    cluster_addr: String,
    /// Where this node listens for the other nodes' visitor streams (mutual TLS under the
    /// cluster's CA) [default: 0.0.0.0 and cluster_addr's port; none without cluster_addr].
    /// With only this set, the address it binds is announced as cluster_addr.
    #[arg(long, global = true, env = "BROKER_CLUSTER_LISTEN", value_name = "ADDR")]
    cluster_listen: SocketAddr,
    /// Seconds without a heartbeat after which a node counts as dead and its tunnels' names
    /// may be taken on another node; heartbeats go every third of it [default: 10].
    #[arg(long, global = true, env = "BROKER_NODE_LEASE_SECS", value_name = "SECS")]
    node_lease_secs: u64,
    /// At SIGTERM, seconds visitor requests in flight get to finish before the broker closes
    /// every connection and exits [default: 10].
    #[arg(long, global = true, env = "BROKER_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    shutdown_grace_secs: u64,
}

/// An IP network (`10.0.0.0/8`) or a single address (`10.0.0.1`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))
}

fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    list.iter()
        .map(|s| parse_net(s))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}
