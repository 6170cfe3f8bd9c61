//! The settings for going public: which DNS provider keeps records, and whether (and how)
//! certificates are ordered. Validated here so `serve` only wires.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Result, bail};
use warren_acme::{ChallengeKind, OrderBudget};
use warren_dns::{Secret, TsigAlgorithm};

use super::SettingsArgs;

/// DNS and ACME, validated.
#[derive(Debug, Clone)]
pub struct PublicConfig {
    /// Where records are kept.
    pub dns: DnsConfig,
    /// What A/AAAA records point at.
    pub addrs: Vec<IpAddr>,
    /// Certificates, when an ACME directory is configured.
    pub acme: Option<AcmeConfig>,
}

/// The DNS provider.
#[derive(Debug, Clone)]
pub enum DnsConfig {
    /// No DNS management (records are the operator's business, DNS-01 impossible).
    None,
    /// The broker's own authoritative server for the delegated domain.
    Builtin {
        /// UDP and TCP listen address.
        addr: SocketAddr,
        /// NS host names.
        ns: Vec<String>,
    },
    /// Cloudflare's v4 API.
    Cloudflare {
        /// API token.
        token: Secret,
        /// Zone name.
        zone: String,
        /// API base URL.
        api: String,
    },
    /// RFC 2136 dynamic updates with TSIG.
    Rfc2136 {
        /// Server.
        server: SocketAddr,
        /// Zone.
        zone: String,
        /// TSIG key name.
        key_name: String,
        /// TSIG secret (base64).
        secret: Secret,
        /// TSIG algorithm.
        algorithm: TsigAlgorithm,
    },
}

/// ACME settings.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// Directory URL.
    pub directory: String,
    /// Extra root for the CA's HTTPS.
    pub root_ca: Option<PathBuf>,
    /// Contact.
    pub email: Option<String>,
    /// Challenge for per-name certificates.
    pub challenge: ChallengeKind,
    /// Order `*.DOMAIN`, which serves every tenant name (reserved or random) with no order of
    /// its own.
    pub wildcard: bool,
    /// The weekly order budget: `acme_orders_per_week`, `acme_orders_per_user_per_week`.
    pub budget: OrderBudget,
    /// Key encrypting certificate keys at rest (else a generated file in the data dir).
    pub cert_key: Option<Secret>,
    /// Where DNS-01 records must show before the CA is asked to look, and for how long.
    pub propagation: warren_acme::Propagation,
}

impl PublicConfig {
    pub(super) fn load(a: &SettingsArgs, domain: &str) -> Result<Self> {
        let mut addrs: Vec<IpAddr> = Vec::new();
        addrs.extend(a.public_ipv4.map(IpAddr::V4));
        addrs.extend(a.public_ipv6.map(IpAddr::V6));
        let provider = a.dns_provider.as_deref().unwrap_or("none");
        let need = |what: &str, v: &Option<String>| -> Result<String> {
            match v {
                Some(s) if !s.is_empty() => Ok(s.clone()),
                _ => bail!("{what}: required with dns_provider = {provider:?}"),
            }
        };
        let dns = match provider {
            "none" => DnsConfig::None,
            "builtin" => DnsConfig::Builtin {
                addr: a.dns_addr.unwrap_or_else(|| ([127, 0, 0, 1], 5353).into()),
                ns: a
                    .dns_ns
                    .clone()
                    .unwrap_or_else(|| vec![format!("ns1.{domain}")]),
            },
            "cloudflare" => DnsConfig::Cloudflare {
                token: Secret::new(need("cloudflare_token", &a.cloudflare_token)?),
                zone: a
                    .cloudflare_zone
                    .clone()
                    .unwrap_or_else(|| domain.to_owned()),
                api: a
                    .cloudflare_api
                    .clone()
                    .unwrap_or_else(|| warren_dns::cloudflare::DEFAULT_API_BASE.to_owned()),
            },
            "rfc2136" => DnsConfig::Rfc2136 {
                server: match a.rfc2136_server {
                    Some(s) => s,
                    None => bail!("rfc2136_server: required with dns_provider = \"rfc2136\""),
                },
                zone: a.rfc2136_zone.clone().unwrap_or_else(|| domain.to_owned()),
                key_name: need("rfc2136_key_name", &a.rfc2136_key_name)?,
                secret: Secret::new(need("rfc2136_secret", &a.rfc2136_secret)?),
                algorithm: a
                    .rfc2136_algorithm
                    .as_deref()
                    .unwrap_or("hmac-sha256")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("rfc2136_algorithm: {e}"))?,
            },
            other => {
                bail!("dns_provider: expected builtin, cloudflare, rfc2136 or none, got {other:?}")
            }
        };
        if !matches!(dns, DnsConfig::None) && addrs.is_empty() {
            bail!(
                "public_ipv4 / public_ipv6: at least one is needed for A/AAAA records with dns_provider = {provider:?}"
            );
        }
        let acme = match a.acme_directory.as_deref() {
            None | Some("") => None,
            Some(directory) => {
                let challenge: ChallengeKind = a
                    .acme_challenge
                    .as_deref()
                    .unwrap_or("http-01")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("acme_challenge: {e}"))?;
                let dns_on = !matches!(dns, DnsConfig::None);
                if challenge == ChallengeKind::Dns01 && !dns_on {
                    bail!("acme_challenge: dns-01 needs a dns_provider");
                }
                let wildcard = a.acme_wildcard.unwrap_or(dns_on);
                if wildcard && !dns_on {
                    bail!("acme_wildcard: a wildcard certificate needs DNS-01, so a dns_provider");
                }
                let defaults = OrderBudget::default();
                let budget = OrderBudget {
                    per_week: a.acme_orders_per_week.unwrap_or(defaults.per_week),
                    per_owner_per_week: a
                        .acme_orders_per_user_per_week
                        .unwrap_or(defaults.per_owner_per_week),
                };
                if budget.per_week == 0 {
                    bail!("acme_orders_per_week: must be greater than 0");
                }
                if budget.per_owner_per_week == 0 || budget.per_owner_per_week > budget.per_week {
                    bail!(
                        "acme_orders_per_user_per_week: must be between 1 and acme_orders_per_week ({}), got {}",
                        budget.per_week,
                        budget.per_owner_per_week
                    );
                }
                Some(AcmeConfig {
                    directory: directory.to_owned(),
                    budget,
                    root_ca: a.acme_root_ca.clone(),
                    email: a.acme_email.clone(),
                    challenge,
                    wildcard,
                    cert_key: a.cert_key.clone().map(Secret::new),
                    propagation: warren_acme::Propagation {
                        servers: a.dns_propagation_servers.clone(),
                        timeout: match a.dns_propagation_timeout_secs {
                            Some(0) => {
                                bail!("dns_propagation_timeout_secs: must be greater than 0")
                            }
                            Some(s) => std::time::Duration::from_secs(s),
                            None => warren_dns::propagation::DEFAULT_TIMEOUT,
                        },
                    },
                })
            }
        };
        Ok(Self { dns, addrs, acme })
    }
}
