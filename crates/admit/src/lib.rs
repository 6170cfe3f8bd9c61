//! Admission at accept time: which new connections the broker takes on at all.
//!
//! The SSH server and the edge ask [`Admission::admit`] for each connection they accept,
//! before any byte is read or any key exchange is done, and get a [`Ticket`] or a [`Refusal`]. A
//! ticket holds the connection's place in three limits:
//! - its IP's count ([`PerIp`]): concurrent connections per IP (or IPv6 /64);
//! - the global count of connections that have not yet identified themselves ([`Pending`]):
//!   released by the caller once a request head, a ClientHello or an SSH login arrived;
//! - and, checked once at accept, its IP's rate of new connections ([`IpRate`]).
//!
//! Sources that logged in before ([`Known`]) may take the quarter of the pending places that
//! strangers may not, so a flood from many addresses still leaves owners a way in.
//!
//! Apart from admission, [`AuthFailures`] counts failed SSH authentications per IP and refuses
//! an address that failed too often for the rest of its minute, whatever key it then offers.
//!
//! Sources on the exempt list (the operator's own processes on the box by default) are
//! admitted with an empty ticket. Everything here is O(1) per connection with no lock held
//! across an await (see `accounting_cost` in per_ip.rs for the measured figure).
#![warn(missing_docs)]

mod failures;
mod key;
mod known;
mod pending;
mod per_ip;
mod rate;
mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use failures::AuthFailures;
pub use ipnet::IpNet;
pub use key::IpKey;
pub use known::Known;
pub use pending::{Pending, PendingSlot};
pub use per_ip::{IpSlot, PerIp};
pub use rate::IpRate;
pub use throttle::Throttle;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its IP already holds as many connections as one IP may.
    PerIp,
    /// As many connections as the broker allows are still unidentified.
    Pending,
    /// Its IP opened connections faster than the rate; the next one is allowed after this.
    Rate(Duration),
}

/// A connection's places in the limits, given back when dropped.
#[derive(Debug, Default)]
pub struct Ticket {
    ip: Option<IpSlot>,
    pending: Option<PendingSlot>,
}

impl Ticket {
    /// The pending slot, for whoever will see the connection identify itself (it then calls
    /// [`PendingSlot::release`]); the IP's place stays with the ticket.
    pub fn take_pending(&mut self) -> Option<PendingSlot> {
        self.pending.take()
    }

    /// The connection identified itself: it no longer counts as pending.
    pub fn identified(&mut self) {
        self.pending = None;
    }

    /// Whether the connection's source is on the exempt list (its ticket holds no place).
    pub fn exempt(&self) -> bool {
        self.ip.is_none() && self.pending.is_none()
    }

    /// Lets go of every place (an SSH login: owners are not counted against these limits).
    pub fn release(&mut self) {
        self.ip = None;
        self.pending = None;
    }
}

/// The limits one kind of listener applies to new connections.
#[derive(Debug)]
pub struct Admission {
    per_ip: Arc<PerIp>,
    pending: Arc<Pending>,
    rate: IpRate,
    exempt: Vec<IpNet>,
    known: Option<Known>,
}

impl Admission {
    /// At most `per_ip` connections per IP, `pending` unidentified ones over all IPs, and new
    /// connections per IP at `rate`; none of it for sources in `exempt`.
    pub fn new(per_ip: u32, pending: usize, rate: IpRate, exempt: Vec<IpNet>) -> Self {
        Self {
            per_ip: PerIp::new(per_ip),
            pending: Pending::new(pending),
            rate,
            exempt,
            known: None,
        }
    }

    /// Keeps a quarter of the pending places for sources [`Admission::vouch`] was told of
    /// (the SSH side: addresses that logged in within `ttl`, at most `capacity` of them).
    pub fn with_known(mut self, capacity: usize, ttl: Duration) -> Self {
        self.known = Some(Known::new(capacity, ttl));
        self
    }

    /// `ip` proved itself (an SSH login): it may use the places kept from strangers.
    pub fn vouch(&self, ip: IpAddr) {
        if let Some(known) = &self.known {
            known.vouch(ip);
        }
    }

    /// No limits at all: libraries' defaults and tests.
    pub fn unlimited() -> Self {
        Self::new(
            u32::MAX,
            usize::MAX,
            IpRate::new(0, Duration::from_secs(1), 0),
            Vec::new(),
        )
    }

    /// Admits a connection from `ip`, or says which limit refused it. The rate is checked
    /// first, so a source hammering the listener is refused without touching the counts.
    pub fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(Ticket::default());
        }
        self.rate.check(ip).map_err(Refusal::Rate)?;
        let slot = self.per_ip.try_take(ip).ok_or(Refusal::PerIp)?;
        let known = self.known.as_ref().is_none_or(|k| k.contains(ip));
        let pending = self.pending.try_take(known).ok_or(Refusal::Pending)?;
        Ok(Ticket {
            ip: Some(slot),
            pending: Some(pending),
        })
    }

    /// The per-IP counts.
    pub fn per_ip(&self) -> &PerIp {
        &self.per_ip
    }

    /// The pending count.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [192, 0, 2, last].into()
    }

    #[test]
    fn each_limit_refuses_with_its_reason_and_exempt_sources_pass() {
        let a = Admission::new(
            2,
            3,
            IpRate::new(100, Duration::from_secs(1), 4),
            vec![
                "192.0.2.200/32"
                    .parse()
                    .unwrap_or_else(|_| IpNet::from(ip(200))),
            ],
        );
        let t1 = a.admit(ip(1)).expect("1");
        let _t2 = a.admit(ip(1)).expect("2");
        assert_eq!(a.admit(ip(1)).err(), Some(Refusal::PerIp));
        let _t3 = a.admit(ip(2)).expect("3");
        assert_eq!(a.admit(ip(3)).err(), Some(Refusal::Pending));
        assert_eq!(a.per_ip().held(ip(3)), 0, "a refusal holds nothing");
        let mut t1 = t1;
        t1.identified();
        assert_eq!(a.pending().held(), 2);
        let _t4 = a.admit(ip(3)).expect("a pending place came back");
        // ip(1) has taken 4 of its burst of 4 (two admitted, one refused, one more now).
        drop(t1);
        assert!(a.admit(ip(1)).is_err());
        assert!(matches!(a.admit(ip(1)), Err(Refusal::Rate(_))));
        for _ in 0..100 {
            assert!(a.admit(ip(200)).is_ok(), "exempt");
        }
        assert!(
            a.admit("::ffff:192.0.2.200".parse().unwrap_or(ip(200)))
                .is_ok()
        );
    }

    #[test]
    fn known_sources_get_the_places_strangers_may_not_take() {
        let a = Admission::new(
            10,
            4,
            IpRate::new(100, Duration::from_secs(1), 100),
            Vec::new(),
        )
        .with_known(16, Duration::from_secs(3600));
        a.vouch(ip(9));
        let strangers: Vec<_> = (1..=3).map(|i| a.admit(ip(i)).expect("stranger")).collect();
        assert_eq!(
            a.admit(ip(4)).err(),
            Some(Refusal::Pending),
            "3 of 4 for strangers"
        );
        let owner = a
            .admit(ip(9))
            .expect("the known source gets the kept place");
        assert_eq!(
            a.admit(ip(9)).err(),
            Some(Refusal::Pending),
            "the cap holds"
        );
        drop((strangers, owner));
        // Without a known set, as the edge's visitors: the whole cap for everyone.
        let open = Admission::new(
            10,
            2,
            IpRate::new(100, Duration::from_secs(1), 100),
            Vec::new(),
        );
        let _both = (open.admit(ip(1)).expect("1"), open.admit(ip(2)).expect("2"));
    }

    /// What admission costs per connection: the rate check, the IP's count and the pending
    /// count taken, then given back, from 50,000 IPs in turn.
    /// `cargo test -p warren-admit --release -- --ignored --nocapture admission_cost`
    #[test]
    #[ignore]
    fn admission_cost() {
        let a = Admission::new(
            u32::MAX,
            usize::MAX,
            IpRate::new(1_000_000, Duration::from_secs(1), 1_000_000),
            Vec::new(),
        );
        let n = 2_000_000u32;
        let started = std::time::Instant::now();
        for i in 0..n {
            let ip = IpAddr::from((i % 50_000).wrapping_mul(2_654_435_761).to_be_bytes());
            drop(a.admit(ip));
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        println!("admission: {per:.0} ns per accept + release (rate, per-IP, pending)");
    }
}
