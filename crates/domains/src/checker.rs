//! Asking DNS: the TXT at the challenge name, the CNAME at the host, and (when the broker has
//! public addresses) its A/AAAA records, through hickory-resolver.
//!
//! The resolvers are the system's (`/etc/resolv.conf`) unless `dns_resolvers` names others.
//! Nothing is cached: a check is rare (seconds apart for a pending domain, a day for a
//! verified one) and must see a record the moment it changes, not a TTL later.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tracing::debug;

use crate::DomainError;
use crate::proof::{Evidence, Expected, Verdict, challenge_name, decide};

/// How long one lookup may take (each is retried once by the resolver).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Parses `dns_resolvers` entries: `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
pub fn parse_resolvers(entries: &[String]) -> Result<Vec<SocketAddr>, DomainError> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<SocketAddr>()
                .or_else(|_| e.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| DomainError::BadResolver(e.to_owned()))
        })
        .collect()
}

/// Looks up a domain's proof. Cheap to clone? No: share it behind an `Arc`.
pub struct Checker {
    resolver: TokioResolver,
    servers: String,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker asking `servers` (UDP, TCP on truncation), or the system's resolvers when
    /// there are none.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, DomainError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            Resolver::builder(provider).map_err(|e| DomainError::SystemResolvers(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            Resolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = LOOKUP_TIMEOUT;
        opts.attempts = 1;
        let resolver = builder
            .build()
            .map_err(|e| DomainError::SystemResolvers(e.to_string()))?;
        let servers = if servers.is_empty() {
            "system".to_owned()
        } else {
            servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(Self { resolver, servers })
    }

    /// Which resolvers are asked, for the broker's banner.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// Checks `host` against `expected`.
    pub async fn check(&self, host: &str, expected: &Expected) -> Verdict {
        match self.gather(host, !expected.addrs.is_empty()).await {
            Ok(evidence) => {
                debug!(host, ?evidence, "custom domain looked up");
                decide(host, expected, &evidence)
            }
            Err(why) => Verdict::Unknown(why),
        }
    }

    /// What DNS says about `host`: the challenge TXT, the host's CNAME and, if `addrs`, its
    /// addresses. An answer of "no such name" or "no such record" is an empty part, not an
    /// error; a failure to ask is the error, worded for the tenant.
    pub async fn gather(&self, host: &str, addrs: bool) -> Result<Evidence, String> {
        let mut evidence = Evidence::default();
        let challenge = challenge_name(host);
        for rdata in self.records(&challenge, RecordType::TXT).await? {
            if let RData::TXT(txt) = rdata {
                let joined: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                evidence
                    .txt
                    .push(String::from_utf8_lossy(&joined).into_owned());
            }
        }
        for rdata in self.records(host, RecordType::CNAME).await? {
            if let RData::CNAME(c) = rdata {
                evidence.cname = Some(c.0.to_ascii().trim_end_matches('.').to_owned());
            }
        }
        if addrs && evidence.cname.is_none() {
            for kind in [RecordType::A, RecordType::AAAA] {
                for rdata in self.records(host, kind).await? {
                    match rdata {
                        RData::A(a) => evidence.addrs.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) => evidence.addrs.push(IpAddr::V6(a.0)),
                        _ => {}
                    }
                }
            }
        }
        Ok(evidence)
    }

    /// The records of `kind` at `name` (made absolute, so no search domain is tried).
    async fn records(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), kind).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == kind)
                .map(|r| r.data.clone())
                .collect()),
            Err(e) if absent(&e) => Ok(Vec::new()),
            Err(e) => Err(format!("cannot look up {kind} {name}: {e}")),
        }
    }
}

/// Whether `e` is DNS saying "nothing there" rather than failing to answer.
fn absent(e: &NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}
