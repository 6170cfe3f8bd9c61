//! The built-in authoritative DNS server, for a zone delegated to the broker.
//!
//! The operator delegates a zone (`NS` records at the parent pointing at the broker's host) and
//! the broker answers for it from memory: the edge publishes its addresses with
//! [`DnsProvider::set_addresses`], the ACME client puts DNS-01 challenges with
//! [`DnsProvider::add_txt`], and [`BuiltinDns::run`] serves them over UDP and TCP. Records live
//! only in memory: after a restart the broker publishes them again.
//!
//! Why hand-rolled on `hickory-proto` instead of `hickory-server`: everything this server
//! answers is decided by one small pure function (`answer::respond`) over an `arc-swap` snapshot, so
//! the hot path takes no lock and the whole behaviour (NXDOMAIN vs NODATA, empty non-terminals,
//! wildcards, REFUSED outside the zone) is visible in one file and unit-testable without
//! sockets. `hickory-server` would have us adapt this to its `ZoneHandler`/`Catalog` traits
//! (renamed in 0.26, async lookup objects, its own in-memory store with its own locking and
//! serial handling) and its `Server` socket registration, for transport code that is ~150
//! lines here and takes our sockets and our cancellation token as they are.
//!
//! What it serves: A/AAAA and TXT at any name set through the provider; SOA and NS at the apex;
//! `*.zone`-style wildcards (RFC 4592) when such a name was set; NXDOMAIN or NODATA with the SOA
//! in the authority section; REFUSED for names outside the zone and for zone transfers.

mod answer;
mod serve;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};

use crate::names::{name_in_zone, parse_name};
use crate::{DnsError, DnsProvider};

use answer::{Node, Records, ZoneInfo};

/// How to run the built-in server; built by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct BuiltinSettings {
    /// The delegated zone, e.g. `tunnels.example.com`.
    pub zone: String,
    /// Host names of the zone's name servers (what the parent's NS records say). The first
    /// one is the SOA's primary. At least one is required.
    pub ns: Vec<String>,
    /// The zone's contact, `hostmaster@example.com` or DNS form `hostmaster.example.com`;
    /// empty means `hostmaster.<zone>`.
    pub soa_email: String,
    /// TTL of every record served, and the negative-caching TTL. Keep it short (60 s): ACME
    /// challenges and addresses change.
    pub ttl: u32,
    /// Addresses served at the zone apex from the start (usually the broker's own).
    pub apex_addrs: Vec<IpAddr>,
}

/// An authoritative DNS server for one zone, whose records are set through [`DnsProvider`].
///
/// Share it as `Arc<BuiltinDns>`: one clone goes to [`BuiltinDns::run`], others are used as
/// `Arc<dyn DnsProvider>`.
pub struct BuiltinDns {
    zone: ZoneInfo,
    /// What queries read: replaced whole on every change, never locked by readers.
    records: ArcSwap<Records>,
    /// Serialises writers (copy, modify, store) so two changes cannot lose each other. A std
    /// mutex is fine: it is held only for the synchronous copy-modify-store, never across an
    /// `.await`.
    write: Mutex<()>,
}

impl std::fmt::Debug for BuiltinDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinDns")
            .field("zone", &self.zone.origin.to_string())
            .finish_non_exhaustive()
    }
}

impl BuiltinDns {
    /// Checks the settings and prepares an empty zone (apex addresses aside).
    ///
    /// Fails with [`DnsError::BadInput`] on an invalid zone, name-server name or contact.
    pub fn new(settings: BuiltinSettings) -> Result<Self, DnsError> {
        let origin = parse_name(&settings.zone)?;
        if settings.ns.is_empty() {
            return Err(DnsError::BadInput(format!(
                "zone {} needs at least one name server name",
                origin.to_ascii()
            )));
        }
        let ns = settings
            .ns
            .iter()
            .map(|n| parse_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let rname = soa_rname(&settings.soa_email, &origin)?;

        let mut nodes = HashMap::new();
        let apex = Node::with_addrs(&settings.apex_addrs);
        if !apex.is_empty() {
            nodes.insert(LowerName::new(&origin), apex);
        }
        let records = Records {
            serial: initial_serial(),
            nodes,
        };
        Ok(Self {
            zone: ZoneInfo {
                origin: LowerName::new(&origin),
                ns,
                rname,
                ttl: settings.ttl,
            },
            records: ArcSwap::from_pointee(records),
            write: Mutex::new(()),
        })
    }

    /// The zone this server is authoritative for, with its trailing dot.
    pub fn zone(&self) -> String {
        self.zone.origin.to_string()
    }

    /// Applies `change` to a copy of the records and publishes the copy (with the SOA serial
    /// bumped) if `change` says something changed.
    fn update(&self, fqdn: &str, change: impl FnOnce(&mut Node) -> bool) -> Result<(), DnsError> {
        let name = LowerName::new(&name_in_zone(fqdn, &Name::from(&self.zone.origin))?);
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.records.load();
        let mut node = current.nodes.get(&name).cloned().unwrap_or_default();
        if !change(&mut node) {
            return Ok(());
        }
        let mut next = Records::clone(&current);
        next.serial = next.serial.wrapping_add(1);
        if node.is_empty() {
            next.nodes.remove(&name);
        } else {
            next.nodes.insert(name.clone(), node);
        }
        self.records.store(Arc::new(next));
        tracing::debug!(name = %name, "builtin DNS records changed");
        Ok(())
    }
}

#[async_trait::async_trait]
impl DnsProvider for BuiltinDns {
    async fn set_addresses(&self, fqdn: &str, addrs: &[IpAddr]) -> Result<(), DnsError> {
        let wanted = Node::with_addrs(addrs).addrs;
        self.update(fqdn, |node| {
            if node.addrs == wanted {
                return false;
            }
            node.addrs = wanted;
            true
        })
    }

    async fn remove_addresses(&self, fqdn: &str) -> Result<(), DnsError> {
        self.update(fqdn, |node| {
            if node.addrs.is_empty() {
                return false;
            }
            node.addrs.clear();
            true
        })
    }

    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(fqdn, |node| {
            if node.txt.iter().any(|v| v == value) {
                return false;
            }
            node.txt.push(value.to_owned());
            true
        })
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(fqdn, |node| {
            let before = node.txt.len();
            node.txt.retain(|v| v != value);
            node.txt.len() != before
        })
    }

    fn kind(&self) -> &'static str {
        "builtin"
    }
}

/// The SOA RNAME: `hostmaster@example.com` becomes `hostmaster.example.com.` (a dot inside the
/// mailbox part stays part of the first label).
fn soa_rname(email: &str, origin: &Name) -> Result<Name, DnsError> {
    let email = email.trim();
    if email.is_empty() {
        return Name::from_labels(["hostmaster"])
            .and_then(|n| n.append_domain(origin))
            .map_err(|e| DnsError::BadInput(format!("zone too long for a SOA contact: {e}")));
    }
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let domain = parse_name(domain)?;
            Name::from_labels([local.as_bytes()])
                .and_then(|n| n.append_domain(&domain))
                .map(|n| n.to_lowercase())
                .map_err(|e| DnsError::BadInput(format!("bad SOA contact {email:?}: {e}")))
        }
        Some(_) => Err(DnsError::BadInput(format!("bad SOA contact {email:?}"))),
        None => parse_name(email),
    }
}

/// A SOA serial that grows across restarts: seconds since the epoch (fits u32 until 2106).
fn initial_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BuiltinSettings {
        BuiltinSettings {
            zone: "Tunnels.Example.com.".into(),
            ns: vec!["ns1.example.com".into()],
            soa_email: "hostmaster@example.com".into(),
            ttl: 60,
            apex_addrs: vec!["192.0.2.1".parse().expect("ip")],
        }
    }

    #[test]
    fn soa_contact_forms() {
        let origin = parse_name("z.example").expect("name");
        let n = |s: &str| soa_rname(s, &origin).expect("valid").to_ascii();
        assert_eq!(n(""), "hostmaster.z.example.");
        assert_eq!(n("Admin@Example.com"), "admin.example.com.");
        assert_eq!(n("first.last@example.com"), "first\\.last.example.com.");
        assert_eq!(n("hostmaster.example.com"), "hostmaster.example.com.");
        assert!(soa_rname("@example.com", &origin).is_err());
    }

    #[test]
    fn settings_are_checked() {
        assert!(BuiltinDns::new(settings()).is_ok());
        let mut s = settings();
        s.ns.clear();
        assert!(matches!(BuiltinDns::new(s), Err(DnsError::BadInput(_))));
        let mut s = settings();
        s.zone = "bad..zone".into();
        assert!(BuiltinDns::new(s).is_err());
    }

    #[tokio::test]
    async fn changes_bump_the_serial_only_when_something_changed() {
        let dns = BuiltinDns::new(settings()).expect("valid");
        let serial = || dns.records.load().serial;
        let s0 = serial();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        dns.set_addresses("a.tunnels.example.com", &[ip])
            .await
            .expect("set");
        assert_eq!(serial(), s0.wrapping_add(1));
        dns.set_addresses("A.tunnels.example.com.", &[ip, ip])
            .await
            .expect("set again");
        assert_eq!(serial(), s0.wrapping_add(1), "idempotent set is no change");
        dns.remove_txt("a.tunnels.example.com", "nope")
            .await
            .expect("remove absent");
        assert_eq!(serial(), s0.wrapping_add(1));
        dns.remove_addresses("a.tunnels.example.com")
            .await
            .expect("remove");
        assert!(dns.records.load().nodes.len() == 1, "only the apex is left");
        let err = dns
            .add_txt("x.example.org", "v")
            .await
            .expect_err("outside the zone");
        assert!(err.to_string().contains("outside the zone"), "{err}");
    }
}
