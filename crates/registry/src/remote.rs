//! Names held by sessions on other nodes of a cluster.
//!
//! A node learns from the shared database which node holds each name (`warren-cluster`) and
//! binds each one here with an endpoint that reaches that node (`warren-peer`). The edge then
//! serves a visitor who landed on this node exactly as it serves a local tunnel: access rules
//! and headers apply here, the request's log entry is made here and kept by the holding node,
//! and the bytes go on to that node, which opens the channel to the owner. These routes live
//! in a map of their own, read only after this node's own routes miss, so a local tunnel's
//! lookup costs what it did, and a peer that
//! asks for a name ([`Registry::lookup_local`]) never sees them.
//!
//! A name whose node died is parked: visitors get 503 with `Retry-After` until its owner
//! reconnects somewhere and that node's claim arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::table::{Entry, OwnLimits};
use crate::{Endpoint, Registry, Route, RouteKind, RouteStats, SessionId};

/// The session of routes that no session of this node serves.
pub const REMOTE_SESSION: SessionId = 0;

/// Routes of tunnels held on other nodes, grouped by the node that holds them, so that each
/// node is asked once for all of its tunnels ([`holder_counts`]). Local routes are left out.
pub fn by_holder(routes: impl IntoIterator<Item = Arc<Route>>) -> Vec<Vec<Arc<Route>>> {
    let mut by_node: HashMap<String, Vec<Arc<Route>>> = HashMap::new();
    for route in routes {
        if let Some(node) = route.endpoint.node() {
            by_node.entry(node.to_owned()).or_default().push(route);
        }
    }
    by_node.into_values().collect()
}

/// What the node holding `routes` (one node's, as [`by_holder`] groups them) counts of each,
/// with every node's visitors: one question, by name; empty when that node does not answer.
pub async fn holder_counts(routes: &[Arc<Route>]) -> HashMap<String, RouteStats> {
    let Some(first) = routes.first() else {
        return HashMap::new();
    };
    let names = routes.iter().map(|r| r.name.clone()).collect();
    first.endpoint.holder_stats(names).await.unwrap_or_default()
}

impl Registry {
    /// Points `name` at a session on another node, through `endpoint`; replaces whatever this
    /// map had for it. The route has the broker's limits (connections, bandwidth) on this node.
    pub fn bind_remote(
        &self,
        name: &str,
        owner: i64,
        kind: RouteKind,
        endpoint: Arc<dyn Endpoint>,
    ) -> Arc<Route> {
        let mut route = self.new_route(
            name,
            owner,
            REMOTE_SESSION,
            kind,
            endpoint,
            OwnLimits::default(),
        );
        // The holding node keeps the name's log, with every node's visitors in it: nothing
        // is kept here, however many names the cluster holds.
        route.relays_log = kind == RouteKind::Http && self.request_log_entries > 0;
        let mut map = self.remote.write();
        // The same owner's tunnel, placed again (its node's address or liveness seen anew):
        // the visitor connections open on it keep their slots in the new route, so the cap
        // and the counts reported to the holder go on counting them.
        if let Some(Entry::Live(before)) = map.get(name)
            && before.owner == owner
        {
            route.connections = before.connections.clone();
        }
        let route = Arc::new(route);
        map.insert(name, Entry::Live(route.clone()));
        route
    }

    /// `name`'s node is gone: visitors are asked to come back in `retry_after` (503) until
    /// the owner's next claim, wherever it lands, binds it again.
    pub fn park_remote(&self, name: &str, owner: i64, retry_after: Duration) {
        self.remote.write().insert(
            name,
            Entry::Parked {
                owner,
                until: Instant::now() + retry_after,
                log: None,
            },
        );
    }

    /// Forgets where `name` was served in the cluster; whether it was known.
    pub fn unbind_remote(&self, name: &str) -> bool {
        self.remote.write().remove(name).is_some()
    }

    /// Live tunnels held on other nodes, as this node serves them.
    pub fn remote_routes(&self) -> Vec<Arc<Route>> {
        self.remote.live()
    }

    /// Names this node knows to be held elsewhere (live or parked).
    pub fn remote_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.remote.for_each(|name, _| names.push(name.to_owned()));
        names
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{BoxStream, Lookup, OpenError};

    struct Elsewhere(&'static str);
    #[async_trait::async_trait]
    impl Endpoint for Elsewhere {
        async fn open(&self, _: SocketAddr) -> Result<BoxStream, OpenError> {
            Err(OpenError::Away(self.0.into()))
        }
        fn notify(&self, _: String) {}
        fn describe(&self) -> String {
            self.0.into()
        }
    }

    fn described(l: Lookup) -> Option<String> {
        match l {
            Lookup::Live(r) => Some(r.endpoint.describe()),
            _ => None,
        }
    }

    #[test]
    fn a_local_route_wins_and_peers_see_only_local_ones() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        reg.bind_remote("a", 1, RouteKind::Http, Arc::new(Elsewhere("node 2")));
        assert_eq!(described(reg.lookup("a")).as_deref(), Some("node 2"));
        assert!(matches!(reg.lookup_local("a"), Lookup::Unknown));
        let remote: Vec<_> = reg.remote_routes().iter().map(|r| r.name.clone()).collect();
        assert_eq!(remote, ["a"]);
        assert!(reg.routes().is_empty());
        reg.bind("a", 1, 7, RouteKind::Http, Arc::new(Elsewhere("here")))
            .expect("bind");
        assert_eq!(described(reg.lookup("a")).as_deref(), Some("here"));
        // The owner left this node and reconnected on another: served there, not "back soon".
        assert!(reg.unbind("a", 7));
        assert_eq!(described(reg.lookup("a")).as_deref(), Some("node 2"));
        assert!(reg.unbind_remote("a"));
        assert!(matches!(reg.lookup("a"), Lookup::Parked { .. }));
    }

    #[test]
    fn a_dead_nodes_names_ask_visitors_to_retry() {
        let reg = Registry::new(Duration::from_secs(60), 10);
        reg.bind_remote("b", 1, RouteKind::Http, Arc::new(Elsewhere("node 2")));
        reg.park_remote("b", 1, Duration::from_secs(10));
        assert!(matches!(
            reg.lookup("b"),
            Lookup::Parked { retry_after } if retry_after <= Duration::from_secs(10)
        ));
        assert_eq!(reg.remote_names(), vec!["b".to_owned()]);
        // Parked: not a live tunnel anywhere.
        assert!(reg.remote_routes().is_empty());
        // Its owner cannot be told apart from a stranger here: nothing is bound locally.
        assert!(reg.is_free_for("b", 2));
    }
}
