//! The flap damper: a tunnel is reported down only once it has been gone for
//! `alert_down_after_secs`, and a reconnect within that time reports nothing at all.
//!
//! `ssh -R` over a flaky link drops and comes back within seconds; autossh reconnects at once.
//! The hand-built cron script this replaces checked every few minutes, so it never saw those
//! blips, and neither should a pager. Pure state, no clock of its own: the alerts task passes
//! `now` in, and unit tests drive it through every case.
//!
//! `tunnel.up` is sent on every bind that is not a flap: the first bind of a name, and a bind
//! after its `tunnel.down`. Receivers therefore see up and down in pairs (after a restart, the
//! reconnecting tunnels' `tunnel.up` without a `tunnel.down`: the broker keeps no record of
//! who was up across restarts).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::Tunnel;

/// What the damper decided about a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnBind {
    /// Report `tunnel.up`.
    Up,
    /// The tunnel came back within the window: report nothing.
    Flap,
    /// The name was pending down for another owner: report that one down now, then this up.
    Replaced(Gone),
}

/// A tunnel that went away and has not come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// The tunnel as it was.
    pub tunnel: Tunnel,
    /// When it went (Unix seconds), for `down_since`.
    pub since: i64,
    deadline: Instant,
}

/// Tunnels gone less than the window, by name.
#[derive(Debug)]
pub struct Damper {
    after: Duration,
    gone: HashMap<String, Gone>,
}

impl Damper {
    /// A damper reporting down after `after`.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            gone: HashMap::new(),
        }
    }

    /// `t` was bound at `now`.
    pub fn bind(&mut self, t: &Tunnel) -> OnBind {
        match self.gone.remove(&t.name) {
            Some(g) if g.tunnel.owner == t.owner => OnBind::Flap,
            Some(g) => OnBind::Replaced(g),
            None => OnBind::Up,
        }
    }

    /// `t` went away at `now` (`since` in Unix seconds). A second unbind of a name already
    /// gone keeps the first deadline.
    pub fn unbind(&mut self, t: Tunnel, now: Instant, since: i64) {
        let deadline = now + self.after;
        self.gone.entry(t.name.clone()).or_insert(Gone {
            tunnel: t,
            since,
            deadline,
        });
    }

    /// The tunnels whose window ended by `now`: report them down. They are forgotten, so a
    /// later bind is a plain [`OnBind::Up`].
    pub fn due(&mut self, now: Instant) -> Vec<Gone> {
        let names: Vec<String> = self
            .gone
            .iter()
            .filter(|(_, g)| g.deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        let mut out: Vec<Gone> = names.iter().filter_map(|n| self.gone.remove(n)).collect();
        out.sort_by_key(|g| g.deadline);
        out
    }

    /// When the next window ends, if any tunnel is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gone.values().map(|g| g.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, owner: i64) -> Tunnel {
        Tunnel {
            name: name.into(),
            kind: "http".into(),
            url: format!("http://{name}.localhost"),
            owner: Some(owner),
        }
    }

    #[test]
    fn a_reconnect_within_the_window_reports_nothing() {
        let start = Instant::now();
        let mut d = Damper::new(Duration::from_secs(60));
        assert_eq!(d.bind(&t("chat", 1)), OnBind::Up);
        d.unbind(t("chat", 1), start, 100);
        assert_eq!(d.due(start + Duration::from_secs(59)), vec![]);
        assert_eq!(d.bind(&t("chat", 1)), OnBind::Flap);
        assert_eq!(d.due(start + Duration::from_secs(600)), vec![]);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn staying_down_reports_once_then_up_again() {
        let start = Instant::now();
        let mut d = Damper::new(Duration::from_secs(60));
        d.unbind(t("chat", 1), start, 100);
        // A second unbind (another forward of the same session) does not move the deadline.
        d.unbind(t("chat", 1), start + Duration::from_secs(30), 130);
        assert_eq!(d.next_deadline(), Some(start + Duration::from_secs(60)));
        let due = d.due(start + Duration::from_secs(60));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].tunnel.name.as_str(), due[0].since), ("chat", 100));
        assert_eq!(d.due(start + Duration::from_secs(120)), vec![]);
        assert_eq!(d.bind(&t("chat", 1)), OnBind::Up);
    }

    #[test]
    fn a_name_taken_by_someone_else_reports_the_old_owner_down() {
        let start = Instant::now();
        let mut d = Damper::new(Duration::from_secs(60));
        d.unbind(t("brave-otter-1", 1), start, 100);
        match d.bind(&t("brave-otter-1", 2)) {
            OnBind::Replaced(g) => assert_eq!(g.tunnel.owner, Some(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.next_deadline(), None);
    }
}
