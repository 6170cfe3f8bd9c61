//! The connection limits against floods (`ssh_max_startups*`, `*_visitor_connection*`,
//! `limit_exempt`), and the defaults derived from the open-file limit.
//!
//! Every connection is a file descriptor. The caps on connections that have not yet
//! authenticated or sent a request (`ssh_max_startups`, `max_pending_visitor_connections`) are
//! what a stranger can fill for free, so by default they take at most 1/16 and 1/4 of the
//! soft open-file limit the broker runs with: whatever a flood does, more than half of the
//! descriptors stay for owners' sessions, visitors being served, the database and certificate
//! files. One IP may hold at most 1/8 of it in visitor connections. The same soft limit is the
//! one `serve` raised to the hard limit at start, so a unit with `LimitNOFILE=65536` gets
//! larger caps with no setting changed.

use std::time::Duration;

use anyhow::{Result, bail};
use tracing::{info, warn};
use warren_edge::IpNet;

use super::args::SettingsArgs;

/// The limits as configured: `None` where the default is derived at start.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodLimits {
    /// Unauthenticated SSH connections per IP.
    pub ssh_startups_per_ip: u32,
    /// Unauthenticated SSH connections in all.
    pub ssh_startups: Option<usize>,
    /// New SSH connections per IP per minute (0: none).
    pub ssh_per_minute_per_ip: u32,
    /// Failed SSH authentications per IP per minute before it is refused (0: none).
    pub ssh_auth_failures_per_minute_per_ip: u32,
    /// Visitor connections per IP at once.
    pub visitors_per_ip: Option<u32>,
    /// New visitor connections per IP per second (0: none), after a burst of …
    pub visitors_per_sec_per_ip: u32,
    /// … this many.
    pub visitor_burst_per_ip: u32,
    /// Visitor connections without a request head or ClientHello, in all.
    pub pending_visitors: Option<usize>,
    /// Sources none of these apply to.
    pub exempt: Vec<IpNet>,
}

/// The limits in force, every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// See [`FloodLimits`].
    pub ssh_startups_per_ip: u32,
    /// See [`FloodLimits`].
    pub ssh_startups: usize,
    /// See [`FloodLimits`].
    pub visitors_per_ip: u32,
    /// See [`FloodLimits`].
    pub pending_visitors: usize,
}

impl FloodLimits {
    /// Reads and checks the settings: the caps must be at least 1 (a cap of 0 would refuse
    /// everyone); a rate of 0 turns that rate off.
    pub fn load(a: &SettingsArgs) -> Result<Self> {
        let positive = |name: &str, v: Option<u64>| -> Result<Option<u64>> {
            match v {
                Some(0) => bail!("{name}: must be greater than 0"),
                v => Ok(v),
            }
        };
        let burst = a.visitor_connection_burst_per_ip.unwrap_or(200);
        if burst == 0 {
            bail!("visitor_connection_burst_per_ip: must be greater than 0");
        }
        Ok(Self {
            ssh_startups_per_ip: positive(
                "ssh_max_startups_per_ip",
                Some(u64::from(a.ssh_max_startups_per_ip.unwrap_or(10))),
            )?
            .map_or(10, |v| v as u32),
            ssh_startups: positive("ssh_max_startups", a.ssh_max_startups.map(|v| v as u64))?
                .map(|v| v as usize),
            ssh_per_minute_per_ip: a.ssh_connections_per_minute_per_ip.unwrap_or(60),
            ssh_auth_failures_per_minute_per_ip: a
                .ssh_auth_failures_per_minute_per_ip
                .unwrap_or(30),
            visitors_per_ip: positive(
                "max_visitor_connections_per_ip",
                a.max_visitor_connections_per_ip.map(u64::from),
            )?
            .map(|v| v as u32),
            visitors_per_sec_per_ip: a.visitor_connections_per_sec_per_ip.unwrap_or(50),
            visitor_burst_per_ip: burst,
            pending_visitors: positive(
                "max_pending_visitor_connections",
                a.max_pending_visitor_connections.map(|v| v as u64),
            )?
            .map(|v| v as usize),
            exempt: a.limit_exempt.clone().unwrap_or_else(|| {
                vec![
                    IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                    IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
                ]
            }),
        })
    }

    /// How long an address that logged in keeps its way past a flood of strangers.
    const KNOWN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

    /// The caps for a process allowed `open_files` descriptors (see the module doc).
    pub fn resolve(&self, open_files: u64) -> Resolved {
        let share = |div: u64, lo: u64, hi: u64| (open_files / div).clamp(lo, hi);
        Resolved {
            ssh_startups: self.ssh_startups.unwrap_or(share(16, 8, 200) as usize),
            ssh_startups_per_ip: self.ssh_startups_per_ip,
            visitors_per_ip: self.visitors_per_ip.unwrap_or(share(8, 8, 256) as u32),
            pending_visitors: self
                .pending_visitors
                .unwrap_or(share(4, 16, 10_000) as usize),
        }
    }

    /// The SSH side's admission, for a process allowed `open_files` descriptors.
    pub fn ssh(&self, r: &Resolved) -> warren_admit::Admission {
        warren_admit::Admission::new(
            r.ssh_startups_per_ip,
            r.ssh_startups,
            warren_admit::IpRate::new(
                self.ssh_per_minute_per_ip,
                Duration::from_secs(60),
                self.ssh_per_minute_per_ip,
            ),
            self.exempt.clone(),
        )
        // Owners' addresses of the last week keep a quarter of `ssh_max_startups` (see
        // `warren_admit::Known`); 65,536 addresses are ~4 MiB at most.
        .with_known(65_536, Self::KNOWN_FOR)
    }

    /// The SSH side's count of failed authentications per IP: 65,536 addresses tracked at most
    /// (~4 MiB), the oldest window dropped first past that.
    pub fn ssh_auth_failures(&self) -> warren_admit::AuthFailures {
        warren_admit::AuthFailures::new(
            self.ssh_auth_failures_per_minute_per_ip,
            Duration::from_secs(60),
            65_536,
            self.exempt.clone(),
        )
    }

    /// The edge's admission (every visitor listener shares it).
    pub fn visitors(&self, r: &Resolved) -> warren_admit::Admission {
        warren_admit::Admission::new(
            r.visitors_per_ip,
            r.pending_visitors,
            warren_admit::IpRate::new(
                self.visitors_per_sec_per_ip,
                Duration::from_secs(1),
                self.visitor_burst_per_ip,
            ),
            self.exempt.clone(),
        )
    }
}

/// Logs the caps chosen, and warns when the configured ones leave less than half of the
/// descriptors for everything else.
pub fn log(r: &Resolved, open_files: u64) {
    info!(
        open_files,
        ssh_max_startups = r.ssh_startups,
        ssh_max_startups_per_ip = r.ssh_startups_per_ip,
        max_pending_visitor_connections = r.pending_visitors,
        max_visitor_connections_per_ip = r.visitors_per_ip,
        "connection limits"
    );
    let strangers = (r.ssh_startups + r.pending_visitors) as u64;
    if strangers > open_files / 2 {
        warn!(
            open_files,
            unauthenticated = strangers,
            "ssh_max_startups + max_pending_visitor_connections exceed half the open-file limit: a flood can leave too few descriptors for owners and visitors"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_open_file_limit_within_bounds() -> Result<()> {
        let l = FloodLimits::load(&SettingsArgs::default())?;
        let small = l.resolve(256);
        assert_eq!(
            (
                small.ssh_startups,
                small.pending_visitors,
                small.visitors_per_ip
            ),
            (16, 64, 32)
        );
        let unit = l.resolve(1024);
        assert_eq!(
            (
                unit.ssh_startups,
                unit.pending_visitors,
                unit.visitors_per_ip
            ),
            (64, 256, 128)
        );
        let big = l.resolve(1 << 20);
        assert_eq!(
            (big.ssh_startups, big.pending_visitors, big.visitors_per_ip),
            (200, 10_000, 256)
        );
        assert_eq!(l.resolve(0).ssh_startups, 8);
        assert_eq!(l.ssh_startups_per_ip, 10);
        assert_eq!(l.ssh_auth_failures().max(), 30);
        assert_eq!(l.exempt.len(), 2, "127.0.0.1 and ::1");
        Ok(())
    }

    #[test]
    fn given_values_win_and_zero_caps_are_refused() -> Result<()> {
        let a = SettingsArgs {
            ssh_max_startups: Some(3),
            max_pending_visitor_connections: Some(7),
            max_visitor_connections_per_ip: Some(2),
            limit_exempt: Some(Vec::new()),
            ..Default::default()
        };
        let l = FloodLimits::load(&a)?;
        let r = l.resolve(1 << 20);
        assert_eq!(
            (r.ssh_startups, r.pending_visitors, r.visitors_per_ip),
            (3, 7, 2)
        );
        assert!(l.exempt.is_empty());
        for bad in [
            SettingsArgs {
                ssh_max_startups_per_ip: Some(0),
                ..Default::default()
            },
            SettingsArgs {
                max_pending_visitor_connections: Some(0),
                ..Default::default()
            },
            SettingsArgs {
                visitor_connection_burst_per_ip: Some(0),
                ..Default::default()
            },
        ] {
            let err = format!("{:#}", FloodLimits::load(&bad).expect_err("zero"));
            assert!(err.contains("must be greater than 0"), "{err}");
        }
        Ok(())
    }
}
