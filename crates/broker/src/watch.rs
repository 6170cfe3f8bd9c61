//! Applies admin changes to the running server by tailing the store's audit log.
//!
//! The admin CLI is another process (perhaps on another node, with Postgres); polling the log
//! works the same on SQLite and Postgres and needs no extra channel. Disabled users and
//! removed keys lose their sessions; reservations refresh the edge's "offline" answers; access
//! rules and share links rebuild the name's policy in the edge. Tunnel binds and unbinds and
//! DNS errors go on to the alerts task (`warren-alerts`) through a bounded channel that is
//! never waited on: a slow webhook receiver cannot hold up a `user.disable`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_alerts::Signal;
use warren_registry::Registry;
use warren_registry::RouteKind;
use warren_ssh::Sessions;
use warren_store::{AuditAction, AuditEvent, Store};
use warren_tenants::PublicUrls;

use crate::public::Public;

/// How often the log is read. A rule saved on a live tunnel must take effect within a second;
/// polling once a second would make that a second plus the query at worst. An idle poll is one
/// indexed `SELECT` returning nothing.
const POLL: Duration = Duration::from_millis(250);
/// The registry's sweep of expired parked names runs every this many polls: once a second.
const SWEEP_EVERY: u32 = 4;
/// Audit events read per query.
const PAGE: i64 = 500;

pub struct Watcher {
    store: Arc<dyn Store>,
    public: Arc<Public>,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    cursor: i64,
    /// Names whose access policy must be rebuilt from the store.
    stale_policies: HashSet<String>,
    /// Where tunnel and DNS events go for alerting.
    alerts: mpsc::Sender<Signal>,
    /// How tunnel URLs are written in alerts.
    urls: PublicUrls,
    /// Lets go of a name's hold in the cluster (a disconnect asked on another node).
    hold_release: warren_tenants::HoldRelease,
}

impl Watcher {
    /// Loads the current reservations and remembers where the log ends.
    pub async fn start(
        public: Arc<Public>,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
        alerts: mpsc::Sender<Signal>,
        urls: PublicUrls,
        hold_release: warren_tenants::HoldRelease,
    ) -> Result<Self> {
        let cursor = store.last_event_id().await?;
        let w = Self {
            public,
            store,
            registry,
            sessions,
            cursor,
            stale_policies: HashSet::new(),
            alerts,
            urls,
            hold_release,
        };
        w.reload_reserved().await?;
        // After the cursor is fixed: a change made meanwhile is applied again by the tail.
        let policies = crate::policy::load_all(&*w.store).await?;
        info!(names = policies.len(), "access rules loaded");
        w.registry.set_policies(policies);
        Ok(w)
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        let mut polls = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Drain the log, not one page per tick: after a reconnect storm (10,000 binds and
            // claims) one page a second left a `user.disable` queued behind ~40 s of binds.
            loop {
                match self.poll().await {
                    Ok(n) if n == PAGE as usize => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "cannot read the audit log; retrying");
                        break;
                    }
                }
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(SWEEP_EVERY) {
                self.registry.sweep();
            }
        }
    }

    /// Handles the next page of the audit log; returns how many events it held.
    async fn poll(&mut self) -> Result<usize> {
        let events = self.store.events_since(self.cursor, PAGE).await?;
        let mut names_changed = false;
        for e in &events {
            if let Some(action) = e.kind() {
                names_changed |= self.apply(action, e).await;
            }
            self.cursor = e.id;
        }
        if names_changed {
            self.reload_reserved().await?;
        }
        // Kept until rebuilt: the cursor has moved past their events already.
        for name in std::mem::take(&mut self.stale_policies) {
            if let Err(e) = crate::policy::refresh(&*self.store, &self.registry, &name).await {
                warn!(%name, error = %e, "cannot rebuild the access policy; retrying");
                self.stale_policies.insert(name);
            }
        }
        Ok(events.len())
    }

    /// A disconnect asked through another node of the cluster, of a tunnel a session of this
    /// node serves: the route goes (parked for the grace period, as a local disconnect
    /// leaves it), its hold is released so the other nodes stop sending visitors here, and
    /// the owner is told who did it. On the node that asked, and on every other, this finds
    /// nothing of its own to do. A route bound after the order (the owner reconnected since)
    /// is left alone; the log's times are seconds, so one bound in that same second is not.
    fn disconnect_here(&self, e: &AuditEvent) {
        let warren_registry::Lookup::Live(route) = self.registry.lookup_local(&e.subject) else {
            return;
        };
        let bound = route.stats().since;
        if Some(route.owner) != e.user_id
            || route.endpoint.node().is_some()
            || i64::try_from(bound).unwrap_or(i64::MAX) > e.at
        {
            return;
        }
        if self.registry.unbind(&e.subject, route.session) {
            (self.hold_release)(&e.subject, route.session);
            route.endpoint.notify(format!(
                "tunnel {} was disconnected by {}",
                e.subject, e.actor
            ));
            info!(tunnel = %e.subject, by = %e.actor, "tunnel disconnected through another node");
        }
    }

    /// Reacts to one event; returns whether the set of reserved names changed. Every action is
    /// named here, so a new one is a compile error until someone decides what it means to a
    /// running broker.
    async fn apply(&mut self, action: AuditAction, e: &AuditEvent) -> bool {
        use AuditAction as A;
        match action {
            A::UserDisable => {
                if let Some(uid) = e.user_id {
                    let routes = self.registry.drop_owner(uid);
                    let n = self
                        .sessions
                        .disconnect_user(uid, "your account was disabled")
                        .await;
                    info!(user = %e.subject, sessions = n, tunnels = routes.len(), "user disabled: tunnels dropped");
                }
            }
            A::KeyRemove => {
                let n = self
                    .sessions
                    .disconnect_key(&e.subject, "your key was removed")
                    .await;
                info!(key = %e.subject, sessions = n, "key removed: sessions dropped");
            }
            A::RulesChange | A::ShareCreate | A::ShareRevoke => {
                self.stale_policies.insert(e.subject.clone());
            }
            A::NameReserve => {
                self.stale_policies.insert(e.subject.clone());
                self.public.name_up(&e.subject, e.user_id);
                return true;
            }
            A::NameRelease => {
                self.stale_policies.insert(e.subject.clone());
                if !matches!(
                    self.registry.lookup(&e.subject),
                    warren_registry::Lookup::Live(_)
                ) {
                    self.public.name_down(&e.subject);
                }
                return true;
            }
            // The binder owns a random name; a reserved one only its holder can bind. TCP
            // ports have no DNS name of their own.
            A::TunnelBind => {
                if warren_registry::tcp_port(&e.subject).is_none() {
                    self.public.name_up(&e.subject, e.user_id);
                }
                self.alert(Signal::Bind(self.tunnel(e)));
            }
            A::TunnelUnbind => {
                if warren_registry::tcp_port(&e.subject).is_none()
                    && !self.registry.is_reserved(&e.subject)
                {
                    self.public.name_fading(&e.subject);
                }
                self.alert(Signal::Unbind(self.tunnel(e)));
            }
            A::TunnelDisconnect => {
                self.disconnect_here(e);
                self.alert(Signal::Unbind(self.tunnel(e)));
            }
            // Another node of a cluster ordered or dropped one: serve what the store has now
            // (on the node that did it, this finds nothing new).
            A::CertIssue | A::CertDelete => {
                if let Some(acme) = self.public.acme() {
                    acme.refresh();
                }
            }
            A::DnsError => self.alert(Signal::DnsError {
                name: e.subject.clone(),
                error: e.detail.clone(),
            }),
            // Checked where they matter, at the next use: keys and users at authentication,
            // tokens and console sessions per request (sessions cached for a second), quotas
            // at the next bind. The rest only record what this broker did itself.
            A::UserAdd
            | A::UserEnable
            | A::UserPasswd
            | A::UserQuota
            | A::KeyAdd
            | A::PairingApprove
            | A::PairingReject
            | A::TunnelRefuse
            | A::TokenCreate
            | A::TokenRevoke
            | A::SessionLogin
            | A::SessionLogout
            | A::SessionLogoutAll
            | A::SigningKeyRotate
            | A::ShareRedeem
            | A::AcmeAccount
            | A::DnsSet
            | A::DnsRemove => {}
            // The domains task reads every custom domain from the store each second.
            A::DomainAdd
            | A::DomainRemove
            | A::DomainVerify
            | A::DomainFail
            | A::DomainCheck
            | A::DomainUnroute => {}
            // The alerts task reads webhooks from the store at each event.
            A::WebhookCreate | A::WebhookDelete | A::WebhookGiveUp => {}
        }
        false
    }

    /// The tunnel an event is about, as alerts describe it. The kind is the live route's when
    /// it is still bound; an unbound name's kind the alerts task remembers from its bind.
    fn tunnel(&self, e: &AuditEvent) -> warren_alerts::Tunnel {
        let kind = match self.registry.lookup(&e.subject) {
            warren_registry::Lookup::Live(route) => route.kind,
            _ if warren_registry::tcp_port(&e.subject).is_some() => RouteKind::Tcp,
            _ => RouteKind::Http,
        };
        warren_alerts::Tunnel {
            url: self.urls.url(kind, &e.subject),
            kind: kind.as_str().into(),
            name: e.subject.clone(),
            owner: e.user_id,
        }
    }

    /// Hands `signal` to the alerts task without waiting: when its queue is full the signal
    /// is dropped (and said so), never the watcher held up.
    fn alert(&self, signal: Signal) {
        if let Err(e) = self.alerts.try_send(signal) {
            warn!(error = %e, "alerts queue full; an alert is lost");
        }
    }

    async fn reload_reserved(&self) -> Result<()> {
        let names: HashSet<String> = self
            .store
            .list_reservations(None)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        self.registry.set_reserved(names);
        Ok(())
    }
}
