//! Cloudflare: the zone lives at Cloudflare and records change through its v4 HTTP API.
//!
//! Each operation lists the records at the name (following pagination), compares them with
//! what is wanted, and issues only the creates, updates (`PUT`) and deletes needed, so calling
//! it twice changes nothing the second time. Records are created unproxied (`proxied: false`:
//! tunnel names must resolve to the broker, not to Cloudflare's proxies) with automatic TTL.
//! The zone's id is looked up once by name and cached.
//!
//! The API token needs `Zone:Read` (to find the zone id) and `DNS:Edit` on the zone.

mod api;

use std::net::IpAddr;

use arc_swap::ArcSwapOption;
use hickory_proto::rr::Name;
use reqwest::Method;

use crate::names::{name_in_zone, parse_name, without_dot};
use crate::{DnsError, DnsProvider, Secret};

use api::{
    Api, CallError, IDENTICAL_RECORD_EXISTS, KIND, RECORD_DOES_NOT_EXIST, Record, RecordBody, Zone,
    quote_txt, unquote_txt,
};

/// Cloudflare's production API.
pub const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// Which zone, with which token; built by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct CloudflareSettings {
    /// The API's base URL: [`DEFAULT_API_BASE`] except in tests.
    pub api_base: String,
    /// An API token with `Zone:Read` and `DNS:Edit` on the zone (sent as a bearer token).
    pub token: Secret,
    /// The zone's name as Cloudflare shows it, e.g. `example.com`.
    pub zone: String,
}

impl CloudflareSettings {
    /// Settings for Cloudflare's production API.
    pub fn new(token: impl Into<Secret>, zone: impl Into<String>) -> Self {
        Self {
            api_base: DEFAULT_API_BASE.into(),
            token: token.into(),
            zone: zone.into(),
        }
    }
}

/// Changes records in one Cloudflare zone.
pub struct Cloudflare {
    api: Api,
    zone: Name,
    /// The zone's id, once found. Lock-free; two first calls may both look it up, harmlessly.
    zone_id: ArcSwapOption<String>,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("zone", &without_dot(&self.zone))
            .finish_non_exhaustive()
    }
}

impl Cloudflare {
    /// Checks the settings and prepares the HTTP client. Nothing is sent yet: a wrong token
    /// or an unknown zone shows on the first change.
    pub fn new(settings: CloudflareSettings) -> Result<Self, DnsError> {
        Ok(Self {
            api: Api::new(&settings.api_base, settings.token)?,
            zone: parse_name(&settings.zone)?,
            zone_id: ArcSwapOption::empty(),
        })
    }

    async fn zone_id(&self) -> Result<std::sync::Arc<String>, DnsError> {
        if let Some(id) = self.zone_id.load_full() {
            return Ok(id);
        }
        let zone = without_dot(&self.zone);
        let zones: Vec<Zone> = self
            .api
            .list_all("zones", &[("name", &zone)])
            .await
            .map_err(CallError::into_dns_error)?;
        let found = zones
            .into_iter()
            .find(|z| z.name.eq_ignore_ascii_case(&zone))
            .ok_or(DnsError::ZoneNotFound {
                provider: KIND,
                zone: zone.clone(),
            })?;
        tracing::debug!(zone = %zone, id = %found.id, "cloudflare zone found");
        let id = std::sync::Arc::new(found.id);
        self.zone_id.store(Some(id.clone()));
        Ok(id)
    }

    /// All records of `rtype` at `name` (every page).
    async fn list(&self, zone_id: &str, rtype: &str, name: &str) -> Result<Vec<Record>, DnsError> {
        let path = format!("zones/{zone_id}/dns_records");
        self.api
            .list_all(&path, &[("type", rtype), ("name", name)])
            .await
            .map_err(CallError::into_dns_error)
    }

    async fn create(&self, zone_id: &str, body: &RecordBody<'_>) -> Result<(), DnsError> {
        let url = self.api.url(&format!("zones/{zone_id}/dns_records"), &[])?;
        match self
            .api
            .call::<serde_json::Value>(Method::POST, url, Some(body))
            .await
        {
            Ok(_) => Ok(()),
            // Someone (a concurrent call of ours) created it meanwhile: that is what we wanted.
            Err(e) if e.has_code(IDENTICAL_RECORD_EXISTS) => Ok(()),
            Err(e) => Err(e.into_dns_error()),
        }
    }

    async fn replace(
        &self,
        zone_id: &str,
        id: &str,
        body: &RecordBody<'_>,
    ) -> Result<(), DnsError> {
        let url = self
            .api
            .url(&format!("zones/{zone_id}/dns_records/{id}"), &[])?;
        self.api
            .call::<serde_json::Value>(Method::PUT, url, Some(body))
            .await
            .map(|_| ())
            .map_err(CallError::into_dns_error)
    }

    async fn delete(&self, zone_id: &str, id: &str) -> Result<(), DnsError> {
        let url = self
            .api
            .url(&format!("zones/{zone_id}/dns_records/{id}"), &[])?;
        match self
            .api
            .call::<serde_json::Value>(Method::DELETE, url, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.has_code(RECORD_DOES_NOT_EXIST) => Ok(()),
            Err(e) => Err(e.into_dns_error()),
        }
    }

    /// Makes the `rtype` records at `name` exactly `wanted`, reusing records that need a new
    /// address (PUT) before creating or deleting any.
    async fn converge(
        &self,
        zone_id: &str,
        rtype: &str,
        name: &str,
        wanted: &[IpAddr],
    ) -> Result<(), DnsError> {
        let existing = self.list(zone_id, rtype, name).await?;
        let mut missing: Vec<IpAddr> = wanted.to_vec();
        let mut spare: Vec<Record> = Vec::new();
        for record in existing {
            let current = record.content.parse::<IpAddr>().ok();
            match current.and_then(|ip| missing.iter().position(|w| *w == ip)) {
                Some(i) => {
                    missing.swap_remove(i);
                }
                None => spare.push(record),
            }
        }
        for ip in missing {
            let content = ip.to_string();
            let body = RecordBody {
                rtype,
                name,
                content: &content,
                ttl: 1,
                proxied: false,
            };
            match spare.pop() {
                Some(record) => self.replace(zone_id, &record.id, &body).await?,
                None => self.create(zone_id, &body).await?,
            }
        }
        for record in spare {
            self.delete(zone_id, &record.id).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl DnsProvider for Cloudflare {
    async fn set_addresses(&self, fqdn: &str, addrs: &[IpAddr]) -> Result<(), DnsError> {
        let name = without_dot(&name_in_zone(fqdn, &self.zone)?);
        let zone_id = self.zone_id().await?;
        let mut v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
        let mut v6: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv6).collect();
        for list in [&mut v4, &mut v6] {
            list.sort();
            list.dedup();
        }
        tracing::debug!(name = %name, "cloudflare: setting addresses");
        self.converge(&zone_id, "A", &name, &v4).await?;
        self.converge(&zone_id, "AAAA", &name, &v6).await
    }

    async fn remove_addresses(&self, fqdn: &str) -> Result<(), DnsError> {
        self.set_addresses(fqdn, &[]).await
    }

    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = without_dot(&name_in_zone(fqdn, &self.zone)?);
        let zone_id = self.zone_id().await?;
        let existing = self.list(&zone_id, "TXT", &name).await?;
        if existing.iter().any(|r| unquote_txt(&r.content) == value) {
            return Ok(());
        }
        let content = quote_txt(value);
        tracing::debug!(name = %name, "cloudflare: adding TXT");
        let body = RecordBody {
            rtype: "TXT",
            name: &name,
            content: &content,
            ttl: 1,
            proxied: false,
        };
        self.create(&zone_id, &body).await
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = without_dot(&name_in_zone(fqdn, &self.zone)?);
        let zone_id = self.zone_id().await?;
        let existing = self.list(&zone_id, "TXT", &name).await?;
        for record in existing.iter().filter(|r| unquote_txt(&r.content) == value) {
            tracing::debug!(name = %name, "cloudflare: removing TXT");
            self.delete(&zone_id, &record.id).await?;
        }
        Ok(())
    }

    /// The zone's Cloudflare name servers, as its zone object lists them, resolved (port 53).
    /// None when they cannot be had: the order then goes ahead without waiting, as before.
    async fn authoritative_servers(&self) -> Vec<std::net::SocketAddr> {
        let zone = without_dot(&self.zone);
        let zones: Vec<Zone> = match self.api.list_all("zones", &[("name", &zone)]).await {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(zone = %zone, error = %e.into_dns_error(), "cannot list the zone's name servers");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for ns in zones
            .into_iter()
            .filter(|z| z.name.eq_ignore_ascii_case(&zone))
            .flat_map(|z| z.name_servers)
        {
            let found = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::lookup_host((ns.as_str(), 53)),
            )
            .await;
            match found {
                Ok(Ok(addrs)) => match one_reachable(addrs, can_route) {
                    Some(addr) => out.push(addr),
                    None => {
                        tracing::warn!(%ns, "no address of a name server of the zone is reachable from here")
                    }
                },
                _ => tracing::warn!(%ns, "cannot resolve a name server of the zone"),
            }
        }
        out
    }

    /// Finding the zone proves the token and the zone name; whether the token may also edit
    /// records shows only at the first change (Cloudflare has no dry run for that).
    async fn check(&self) -> Result<String, DnsError> {
        let id = self.zone_id().await?;
        Ok(format!(
            "cloudflare: the token sees zone {} (id {id})",
            without_dot(&self.zone)
        ))
    }

    fn kind(&self) -> &'static str {
        KIND
    }
}

/// One address to ask of a name server that has several: an IPv4 one this host can route to,
/// else an IPv6 one. Every address of every server used to be awaited, and on an IPv4-only
/// VPS the IPv6 ones never answer, so each DNS-01 order waited out its whole timeout and failed.
fn one_reachable(
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
    routable: impl Fn(&std::net::SocketAddr) -> bool,
) -> Option<std::net::SocketAddr> {
    let mut usable: Vec<_> = addrs.into_iter().filter(|a| routable(a)).collect();
    usable.sort_by_key(std::net::SocketAddr::is_ipv6);
    usable.into_iter().next()
}

/// Whether this host has a route to `addr`: connecting a UDP socket sends nothing, and fails at
/// once without a route (no IPv6 on the host, say).
fn can_route(addr: &std::net::SocketAddr) -> bool {
    let local: std::net::SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(local)
        .and_then(|s| s.connect(addr))
        .is_ok()
}

#[cfg(test)]
mod reach_tests {
    use super::*;

    #[test]
    fn one_routable_address_per_name_server_ipv4_first() {
        let v4: std::net::SocketAddr = "173.245.58.1:53".parse().expect("addr");
        let v6: std::net::SocketAddr = "[2606:4700:50::1]:53".parse().expect("addr");
        assert_eq!(one_reachable([v6, v4], |_| true), Some(v4));
        assert_eq!(
            one_reachable([v6, v4], |a| a.is_ipv6()),
            Some(v6),
            "an IPv6-only host"
        );
        assert_eq!(
            one_reachable([v6], |a| a.is_ipv4()),
            None,
            "an IPv4-only host"
        );
        assert!(can_route(&"127.0.0.1:53".parse().expect("addr")));
    }
}
