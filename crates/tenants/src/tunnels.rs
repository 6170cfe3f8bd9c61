//! Live tunnels (from the registry), the audit log and certificates of one's names.

use std::collections::{BTreeSet, HashMap, HashSet};

use std::sync::Arc;

use warren_registry::{Lookup, OpenError, Route, RouteKind, RouteStats, by_holder, holder_counts};
use warren_store::{AuditAction, AuditEvent};

use crate::{
    Caller, CertView, DnsState, DnsView, EventView, Page, Result, Scope, ServiceError, Tenants,
    TunnelView,
};

/// Largest page of the audit log.
pub const MAX_PAGE: i64 = 500;
/// How long a disconnect asked of another node waits for that node to let go: its watcher
/// reads the audit log four times a second, and the release reaches this node within about
/// 0.1 s, so a healthy cluster answers well within it.
const REMOTE_DISCONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the tunnel list waits for the nodes holding some of its tunnels to give their
/// counters; past it, a tunnel shows what this node's visitors did.
const HOLDER_STATS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The counters of `routes` (tunnels held on other nodes), asked of each holding node at once,
/// one question per node. A node that does not answer in time leaves its tunnels out.
async fn holders_stats(routes: &[Arc<Route>]) -> HashMap<String, RouteStats> {
    let asks = by_holder(routes.iter().cloned())
        .into_iter()
        .map(|group| async move {
            tokio::time::timeout(HOLDER_STATS_WAIT, holder_counts(&group))
                .await
                .unwrap_or_default()
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

impl Tenants {
    /// Live tunnels: the caller's own, or everyone's (`all`, admin).
    pub async fn tunnels(&self, caller: &Caller, all: bool) -> Result<Vec<TunnelView>> {
        caller.require(Scope::Read)?;
        if all {
            caller.require(Scope::Admin)?;
        }
        let reg = self.registry()?;
        let names: HashMap<i64, String> = if all {
            self.store
                .list_users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.name))
                .collect()
        } else {
            HashMap::from([(caller.user.id, caller.user.name.clone())])
        };
        // This node's own tunnels, then those held on other nodes of a cluster (a name that
        // moved here may linger there for a moment: the local route is the one served).
        let local = reg.routes();
        let here: HashSet<&str> = local.iter().map(|r| r.name.as_str()).collect();
        let elsewhere: Vec<_> = reg
            .remote_routes()
            .into_iter()
            .filter(|r| !here.contains(r.name.as_str()))
            .collect();
        let local: Vec<_> = local
            .into_iter()
            .filter(|r| all || r.owner == caller.user.id)
            .collect();
        let elsewhere: Vec<_> = elsewhere
            .into_iter()
            .filter(|r| all || r.owner == caller.user.id)
            .collect();
        // A tunnel held here counts every node's visitors (the others report theirs); one held
        // on another node is counted there, and asked for.
        let mut stats: HashMap<String, RouteStats> = local
            .iter()
            .map(|r| (r.name.clone(), r.cluster_stats()))
            .collect();
        stats.extend(holders_stats(&elsewhere).await);
        let mut out: Vec<TunnelView> = local
            .iter()
            .chain(&elsewhere)
            .map(|r| {
                let stats = stats.get(&r.name).copied().unwrap_or_else(|| r.stats());
                TunnelView {
                    url: self.settings.urls.url(r.kind, &r.name),
                    kind: r.kind.as_str().into(),
                    user: names.get(&r.owner).cloned().unwrap_or_default(),
                    since: stats.since,
                    requests: stats.requests,
                    bytes_in: stats.bytes_in,
                    bytes_out: stats.bytes_out,
                    visitor_connections: stats.connections as u64,
                    node: r.endpoint.node().map(str::to_owned),
                    name: r.name.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The request log of one of the caller's tunnels (an admin's: anyone's): its recent
    /// entries and, with `follow`, each one after them. A tunnel held on another node of a
    /// cluster is read from that node, which keeps every node's visitors of it. 404 for
    /// another's tunnel and for names with no log (passthrough, TCP, or recording turned off);
    /// 503 when the holding node does not answer.
    pub async fn request_feed(
        &self,
        caller: &Caller,
        name: &str,
        follow: bool,
    ) -> Result<warren_registry::LogFeed> {
        caller.require(Scope::Read)?;
        let reg = self.registry()?;
        let not_found =
            || ServiceError::NotFound(format!("no request log for a tunnel named {name:?}"));
        // Where visitors go decides whose log it is: a name held on another node is read
        // there, even while this node still keeps a parked log of an earlier session here.
        if let Lookup::Live(route) = reg.lookup(name)
            && route.endpoint.node().is_some()
        {
            if !(route.keeps_requests() && caller.sees(route.owner)) {
                return Err(not_found());
            }
            return match route.endpoint.request_log(route.owner, follow).await {
                Ok(feed) => Ok(feed),
                // The holder keeps no log of that name for that owner.
                Err(OpenError::Refused(_)) => Err(not_found()),
                Err(e) => Err(ServiceError::Unavailable(e.to_string())),
            };
        }
        match reg.request_log(name) {
            Some(log) if caller.sees(log.owner()) => Ok(log.feed(follow)),
            _ => Err(not_found()),
        }
    }

    /// The last `limit` requests of one of the caller's tunnels, newest last.
    pub async fn requests(
        &self,
        caller: &Caller,
        name: &str,
        limit: usize,
    ) -> Result<Vec<crate::RequestView>> {
        let recent = self.request_feed(caller, name, false).await?.recent;
        let skip = recent.len().saturating_sub(limit);
        Ok(recent
            .iter()
            .skip(skip)
            .map(|e| crate::RequestView::from(e.as_ref()))
            .collect())
    }

    /// Drops a live tunnel of the caller's (or anyone's, admin); its owner is told who did it.
    pub async fn disconnect(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Scope::Write)?;
        let reg = self.registry()?;
        let not_found = || ServiceError::NotFound(format!("no live tunnel named {name:?}"));
        let Lookup::Live(route) = reg.lookup(name) else {
            return Err(not_found());
        };
        if !caller.sees(route.owner) {
            return Err(not_found());
        }
        let mut e = AuditEvent::new(
            &caller.actor(),
            warren_store::AuditAction::TunnelDisconnect,
            name,
            Some(route.owner),
        );
        // The owner's session is on another node of the cluster: that node acts on the event
        // (its watcher tails the same log) and lets go of the name, which this node sees
        // within a second.
        if let Some(node) = route.endpoint.node() {
            e.detail = format!("from the API; held on node {node}");
            self.store.record(&e).await?;
            return self.gone_from(name, &route, node).await;
        }
        reg.unbind(name, route.session);
        if let Some(release) = &self.hold_release {
            release(name, route.session);
        }
        route.endpoint.notify(format!(
            "tunnel {name} was disconnected by {}",
            caller.actor()
        ));
        e.detail = "from the API".into();
        self.store.record(&e).await?;
        Ok(())
    }

    /// Waits until `route`, held on `node`, is no longer what this node serves as `name`.
    async fn gone_from(
        &self,
        name: &str,
        route: &std::sync::Arc<warren_registry::Route>,
        node: &str,
    ) -> Result<()> {
        let reg = self.registry()?;
        let deadline = tokio::time::Instant::now() + REMOTE_DISCONNECT_WAIT;
        loop {
            match reg.lookup(name) {
                Lookup::Live(now) if std::sync::Arc::ptr_eq(&now, route) => {}
                _ => return Ok(()),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Conflict(format!(
                    "tunnel {name:?} is held on node {node}, which has not acted on the \
                     disconnect within {} s (it may be cut off from the database); it will \
                     when it reads the order",
                    REMOTE_DISCONNECT_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The audit log, newest first: the caller's own events, or everyone's (`all`, admin).
    /// `cursor` is the `next_cursor` of the previous page.
    pub async fn events(
        &self,
        caller: &Caller,
        all: bool,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<EventView>> {
        caller.require(Scope::Read)?;
        if all {
            caller.require(Scope::Admin)?;
        }
        let before =
            match cursor {
                None | Some("") => None,
                Some(c) => Some(c.parse::<i64>().map_err(|_| {
                    ServiceError::invalid("cursor", "not a cursor this API gave out")
                })?),
            };
        let limit = limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::invalid(
                "limit",
                format!("use 1 to {MAX_PAGE}"),
            ));
        }
        let user = if all { None } else { Some(caller.user.id) };
        let rows = self.store.events_page(user, before, limit + 1).await?;
        let more = rows.len() as i64 > limit;
        let items: Vec<EventView> = rows
            .into_iter()
            .take(limit as usize)
            .map(|e| EventView {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                subject: e.subject,
                detail: e.detail,
            })
            .collect();
        let next_cursor = if more {
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Certificates of the caller's names (everyone's for an admin with `all`).
    pub async fn certificates(&self, caller: &Caller, all: bool) -> Result<Vec<CertView>> {
        caller.require(Scope::Read)?;
        if all {
            caller.require(Scope::Admin)?;
        }
        Ok(self
            .store
            .list_certificates()
            .await?
            .into_iter()
            .filter(|c| all || c.owner_id == Some(caller.user.id))
            .map(|c| CertView {
                name: c.name,
                not_after: c.not_after,
                issuer: c.issuer,
                last_error: c.last_error,
                next_attempt: c.next_attempt,
            })
            .collect())
    }

    /// The DNS state of the caller's names (everyone's with `all`, admin): their reservations
    /// and the random names their live tunnels hold, TCP ports aside (those have no name of
    /// their own). Read from the audit log, where the broker writes every outcome
    /// (`dns.set`, `dns.remove`, `dns.error`), so any process on the store can answer.
    pub async fn dns(&self, caller: &Caller, all: bool) -> Result<Vec<DnsView>> {
        caller.require(Scope::Read)?;
        if all {
            caller.require(Scope::Admin)?;
        }
        let owner = (!all).then_some(caller.user.name.as_str());
        let mut names: BTreeSet<String> = self
            .store
            .list_reservations(owner)
            .await?
            .into_iter()
            .filter(|r| r.kind != "tcp")
            .map(|r| r.name)
            .collect();
        if let Some(reg) = &self.registry {
            names.extend(
                reg.routes()
                    .into_iter()
                    .filter(|r| (all || r.owner == caller.user.id) && r.kind != RouteKind::Tcp)
                    .map(|r| r.name.clone()),
            );
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let fqdn = format!("{name}.{}", self.settings.urls.domain);
            let (state, since, last_error) = if !self.settings.dns_managed {
                (DnsState::Unmanaged, None, None)
            } else {
                match self.store.last_event_about(&fqdn, &DNS_ACTIONS).await? {
                    None => (DnsState::Pending, None, None),
                    Some(e) => match e.kind() {
                        Some(AuditAction::DnsSet) => (DnsState::Published, Some(e.at), None),
                        Some(AuditAction::DnsRemove) => (DnsState::Removed, Some(e.at), None),
                        _ => (DnsState::Failing, Some(e.at), Some(e.detail)),
                    },
                }
            };
            out.push(DnsView {
                name,
                fqdn,
                state,
                since,
                last_error,
            });
        }
        Ok(out)
    }
}

/// What the broker writes about a name's records.
const DNS_ACTIONS: [AuditAction; 3] = [
    AuditAction::DnsSet,
    AuditAction::DnsRemove,
    AuditAction::DnsError,
];
