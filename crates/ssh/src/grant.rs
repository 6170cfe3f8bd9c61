//! A `tcpip-forward` request, from the client's words to a live route: a pure [`classify`],
//! then [`Tunnels::grant`] (policy and limits; writes to the store only what it has checked
//! it may), then one [`Tunnels::bind`], and one [`Tunnels::refuse`] for every way it can
//! fail. A refused request changes nothing: a name claimed for a bind that then fails is
//! released again.

use std::sync::Arc;

use russh::server::Handle;
use tracing::{info, warn};
use warren_cluster::sticky_id;
use warren_metrics::{ForwardRefusal, Limit};
use warren_registry::{
    BROKER_OWNER, BindError, Lookup, OwnLimits, RouteKind, StickyKey, names, tcp_name, tcp_port,
};
use warren_store::{AuditAction, Reservation, StoreError, User};

use crate::ask::{Ask, classify};
use crate::endpoint::SshEndpoint;
use crate::forwards::{Clash, Forward};
use crate::tunnels::Tunnels;

/// What a request was granted, before it is bound.
pub(crate) struct Grant {
    name: String,
    kind: RouteKind,
    sticky: Option<StickyKey>,
    /// The port to answer with, when the broker picks it (TCP ports); `None` keeps the
    /// request's (or picks a fake one for port 0).
    reply_port: Option<u32>,
    /// The name was claimed for this request: release it if the bind fails.
    claimed: bool,
    /// The name is held across the nodes for this session already (named requests claim it
    /// before the store is asked; the others at the bind).
    held: bool,
    /// The owner's own caps (quotas `max_visitor_connections`, `max_tunnel_bytes_per_sec`),
    /// else the broker's.
    own: OwnLimits,
}

impl Grant {
    /// Binds under `port`, the one the client was already answered with (a forward asked for
    /// while its key waited on a pairing).
    pub(crate) fn answered(mut self, port: u32) -> Self {
        self.reply_port = Some(port);
        self
    }
}

/// Why a request was refused: one line for the owner's session, and the name to record the
/// refusal under in the audit log (named requests only: random ones have no name to speak of).
pub(crate) struct Refusal {
    why: String,
    audit: Option<String>,
    /// The store did not answer: the owner should simply try again (and an operator may want
    /// to know how often that happens: `warren_ssh_forwards_refused_total`).
    store_error: bool,
}

impl Refusal {
    pub(crate) fn new(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            audit: None,
            store_error: false,
        }
    }

    /// The store could not be asked or written to.
    pub(crate) fn database() -> Self {
        Self {
            store_error: true,
            ..Self::new(DB_DOWN)
        }
    }

    fn about(mut self, name: &str) -> Self {
        self.audit = Some(name.to_owned());
        self
    }
}

pub(crate) const DB_DOWN: &str = "the broker cannot reach its database; try again shortly";

impl Tunnels {
    /// Decides what `-R address:port` gets, within the session's and the user's limits.
    pub(crate) async fn grant(
        &self,
        user: &User,
        address: &str,
        port: u32,
    ) -> Result<Grant, Refusal> {
        let (clash, held) = {
            let s = self.lock();
            (s.forwards.check_request(address, port), s.forwards.len())
        };
        if clash == Err(Clash::Request) {
            return Err(Refusal::new(format!(
                "{}:{port} is forwarded already in this session",
                display_addr(address)
            )));
        }
        let limits = &self.server.settings.limits;
        if held >= limits.forwards_per_session {
            self.server.metrics.limit_hit(Limit::ForwardsPerSession);
            return Err(Refusal::new(format!(
                "this session already has {held} forwards, the most this broker allows \
                 (max_forwards_per_session)"
            )));
        }
        let own = self.within_tunnel_quota(user).await?;
        let settings = &self.server.settings;
        match classify(
            address,
            port,
            &settings.urls.domain,
            settings.tls_passthrough,
        ) {
            Ask::Refuse(why) => Err(Refusal::new(why)),
            Ask::Random => {
                let sticky = StickyKey {
                    key: self.key(),
                    address: address.to_owned(),
                    ordinal: self.lock().random_count,
                };
                let name = self.random_name(user, &sticky).await?;
                Ok(Grant {
                    name,
                    kind: RouteKind::Http,
                    sticky: Some(sticky),
                    reply_port: None,
                    claimed: false,
                    held: false,
                    own,
                })
            }
            Ask::Tcp(preferred) => {
                let (port_no, sticky) = self.tcp_port(user, preferred)?;
                Ok(Grant {
                    name: tcp_name(port_no),
                    kind: RouteKind::Tcp,
                    sticky: Some(sticky),
                    reply_port: (port == 0).then_some(u32::from(port_no)),
                    claimed: false,
                    held: false,
                    own,
                })
            }
            Ask::Named(label, kind) => {
                if self.holds(&label) {
                    return Err(Refusal::new(format!(
                        "{label:?} is forwarded already in this session"
                    ))
                    .about(&label));
                }
                // Held across the nodes first: a name served on another node is refused
                // before an auto-claim spends one of the owner's claims on it.
                self.claim_hold(user, &label, kind, None)
                    .await
                    .map_err(|r| r.about(&label))?;
                let claimed = match self.authorize_name(user, &label, kind).await {
                    Ok(claimed) => claimed,
                    Err(r) => {
                        self.settle_hold(&label).await;
                        return Err(r.about(&label));
                    }
                };
                Ok(Grant {
                    name: label,
                    kind,
                    sticky: None,
                    reply_port: None,
                    claimed,
                    held: true,
                    own,
                })
            }
        }
    }

    /// An admin-set `max_tunnels` quota for this user (the broker-wide `max_forwards_per_user`
    /// is enforced by the registry itself, atomically with the bind). Returns the user's own
    /// caps per tunnel (visitor connections, bandwidth) where an admin set them.
    async fn within_tunnel_quota(&self, user: &User) -> Result<OwnLimits, Refusal> {
        let own = match self.server.store.quotas(user.id).await {
            Ok(q) => q,
            Err(e) => {
                warn!(error = %e, "quota lookup failed");
                return Err(Refusal::database());
            }
        };
        if let Some(max) = own.max_tunnels {
            let live = self.server.registry.held_by(user.id).routes;
            if live as i64 >= max {
                self.server.metrics.limit_hit(Limit::TunnelQuota);
                return Err(Refusal::new(format!(
                    "you already have {live} live tunnels, the most allowed for you (quota max_tunnels = {max})"
                )));
            }
        }
        Ok(OwnLimits {
            max_connections: own
                .max_visitor_connections
                .map(|n| usize::try_from(n).unwrap_or(0)),
            bytes_per_sec: own
                .max_tunnel_bytes_per_sec
                .map(|n| u64::try_from(n).unwrap_or(0)),
        })
    }

    /// Binds a granted forward, answering the client with the port it will name it by.
    pub(crate) async fn bind(
        &self,
        user: &User,
        address: &str,
        port: &mut u32,
        grant: Grant,
        handle: Handle,
    ) -> Result<(), Refusal> {
        let next_port = self.lock().next_port;
        let reply = match grant.reply_port {
            Some(p) => p,
            None if *port == 0 => next_port,
            None => *port,
        };
        let endpoint = Arc::new(SshEndpoint {
            handle,
            address: address.to_owned(),
            port: reply,
            console: self.console.clone(),
            shard: warren_shards::Shards::current(),
        });
        let held = match grant.held {
            true => Ok(()),
            false => {
                self.claim_hold(user, &grant.name, grant.kind, grant.sticky.as_ref())
                    .await
            }
        };
        if let Err(refusal) = held {
            if grant.claimed {
                self.unclaim(&grant.name).await;
            }
            return Err(refusal.about(&grant.name));
        }
        let registry = &self.server.registry;
        let displaced = match registry.bind_limited(
            &grant.name,
            user.id,
            self.id,
            grant.kind,
            endpoint,
            grant.own,
        ) {
            Ok((_, displaced)) => displaced,
            Err(e) => {
                self.settle_hold(&grant.name).await;
                if grant.claimed {
                    self.unclaim(&grant.name).await;
                }
                let why = match e {
                    BindError::Taken(name) => format!("name {name:?} is in use by another user"),
                    limit => {
                        self.server.metrics.limit_hit(match limit {
                            BindError::TooManyTcpPorts(_) => Limit::TcpPortsPerUser,
                            _ => Limit::ForwardsPerUser,
                        });
                        limit.to_string()
                    }
                };
                return Err(Refusal::new(why).about(&grant.name));
            }
        };
        let fwd = Forward {
            name: grant.name.clone(),
            kind: grant.kind,
            sticky: grant.sticky.clone(),
        };
        let inserted = {
            let mut s = self.lock();
            if s.closed {
                Err("the session ended")
            } else if s.forwards.insert(address, reply, fwd).is_err() {
                Err("this forward clashes with another of this session")
            } else {
                if reply == s.next_port {
                    s.next_port += 1;
                }
                match (&grant.sticky, grant.kind) {
                    (None, _) => {}
                    (Some(_), RouteKind::Tcp) => s.tcp_count += 1,
                    (Some(_), _) => s.random_count += 1,
                }
                Ok(())
            }
        };
        if let Err(why) = inserted {
            // Never leave a route that no forward owns (`grant` checked the clashes, but an
            // approval's binds can run beside the handler's).
            registry.unbind(&grant.name, self.id);
            self.settle_hold(&grant.name).await;
            if grant.claimed {
                self.unclaim(&grant.name).await;
            }
            return Err(Refusal::new(why));
        }
        *port = reply;
        if let Some(old) = displaced {
            old.endpoint.notify(format!(
                "{} was taken over by a newer session of yours",
                grant.name
            ));
        }
        let sticky_detail = grant.sticky.as_ref().map(StickyKey::to_detail);
        if let Some(key) = grant.sticky {
            registry.remember(key, &grant.name);
        }
        let url = self.server.public_url(grant.kind, &grant.name);
        info!(name = %grant.name, user = %user.name, "tunnel bound");
        self.console.line(format!(
            "{url} -> forward {}:{reply}",
            display_addr(address)
        ));
        let detail = match sticky_detail {
            Some(sticky) => format!("{address}:{reply} {sticky}"),
            None => format!("{address}:{reply}"),
        };
        self.audit(AuditAction::TunnelBind, &grant.name, detail)
            .await;
        Ok(())
    }

    /// Tells the owner why `-R address:port` was refused (and the audit log, for names).
    pub(crate) async fn refuse(&self, address: &str, port: u32, refusal: Refusal) {
        self.server.metrics.forward_refused(if refusal.store_error {
            ForwardRefusal::StoreError
        } else {
            ForwardRefusal::Policy
        });
        self.console
            .line(format!("refused -R {address}:{port}: {}", refusal.why));
        if let Some(name) = &refusal.audit {
            self.audit(AuditAction::TunnelRefuse, name, refusal.why)
                .await;
        }
    }

    /// Picks a free random name, preferring the one this forward had before. A name is free
    /// when nobody else holds it live or parked (the registry) and nobody else has reserved it
    /// (the store): both are asked before it is handed out.
    async fn random_name(&self, user: &User, sticky: &StickyKey) -> Result<String, Refusal> {
        let reg = &self.server.registry;
        // The cluster's memory first (the owner reconnected here after their node died),
        // then this node's.
        let clustered = match &self.server.cluster {
            Some(cluster) => cluster.sticky_name(&sticky_id(sticky), user.id).await,
            None => None,
        };
        let remembered = clustered.or_else(|| reg.sticky(sticky));
        if let Some(name) = remembered
            && reg.is_free_for(&name, user.id)
            && !self.holds(&name)
            && self
                .reservation_holder(&name)
                .await?
                .is_none_or(|holder| holder == user.id)
        {
            return Ok(name);
        }
        for _ in 0..32 {
            let name = names::random();
            if !reg.is_vacant(&name) {
                continue;
            }
            if self.reservation_holder(&name).await?.is_none() {
                return Ok(name);
            }
        }
        Err(Refusal::new("no free random name found; try again"))
    }

    /// Who has reserved `name` (`None`: nobody).
    async fn reservation_holder(&self, name: &str) -> Result<Option<i64>, Refusal> {
        Ok(self.held_reservation(name).await?.map(|r| r.user_id))
    }

    /// The reservation of `name`, if any; the one store lookup every path here uses.
    async fn held_reservation(&self, name: &str) -> Result<Option<Reservation>, Refusal> {
        self.server.store.reservation(name).await.map_err(|e| {
            warn!(error = %e, "reservation lookup failed");
            Refusal::database()
        })
    }

    /// May `user` bind the named `label`? Claims it when free and auto-claim is on; returns
    /// whether it claimed. Everything that could refuse is checked before the claim is
    /// written, so a refused request leaves no reservation behind.
    async fn authorize_name(
        &self,
        user: &User,
        label: &str,
        kind: RouteKind,
    ) -> Result<bool, Refusal> {
        names::validate(label).map_err(|e| Refusal::new(e.to_string()))?;
        if !self.server.registry.is_free_for(label, user.id) {
            // The console's own name (a label from the config, not on the fixed reserved
            // list) is the operator's, not "another user's".
            let operators = matches!(
                self.server.registry.lookup(label),
                Lookup::Live(r) if r.owner == BROKER_OWNER
            );
            return Err(Refusal::new(if operators {
                format!("name {label:?} is reserved by the operator")
            } else {
                format!("name {label:?} is in use by another user")
            }));
        }
        let store = &self.server.store;
        let held = self.held_reservation(label).await?;
        if let Some(r) = &held
            && r.user_id == user.id
            && r.kind != kind.as_str()
        {
            let how = match r.kind.as_str() {
                "tls" => format!("-R {label}:443:…"),
                "tcp" => "-R tcp:PORT:…".to_owned(),
                _ => format!("-R {label}:80:…"),
            };
            return Err(Refusal::new(format!(
                "{label:?} is reserved as {}: use {how}",
                r.kind
            )));
        }
        match held.map(|r| r.user_id) {
            Some(holder) if holder == user.id => {
                self.server.registry.mark_reserved(label);
                Ok(false)
            }
            Some(_) => Err(Refusal::new(format!(
                "name {label:?} is reserved by another user"
            ))),
            None if self.server.settings.auto_claim => {
                self.may_claim(user).await?;
                match store
                    .reserve(&self.actor(), &user.name, label, kind.as_str())
                    .await
                {
                    Ok(_) => {
                        self.server.registry.mark_reserved(label);
                        self.console
                            .line(format!("claimed the name {label:?} for {}", user.name));
                        Ok(true)
                    }
                    Err(StoreError::NameTaken { .. }) => Err(Refusal::new(format!(
                        "name {label:?} is reserved by another user"
                    ))),
                    Err(e) => {
                        warn!(error = %e, "claim failed");
                        Err(Refusal::database())
                    }
                }
            }
            None => Err(Refusal::new(format!(
                "name {label:?} is not reserved for you; ask the operator: broker reserve {} {label}",
                user.name
            ))),
        }
    }

    /// The per-user bounds on claiming names: how many one holds, and how fast one claims.
    async fn may_claim(&self, user: &User) -> Result<(), Refusal> {
        let limits = &self.server.settings.limits;
        let held = self
            .server
            .store
            .list_reservations(Some(&user.name))
            .await
            .map_err(|e| {
                warn!(error = %e, "reservation count failed");
                Refusal::database()
            })?
            .len();
        if held >= limits.names_per_user {
            self.server.metrics.limit_hit(Limit::NamesPerUser);
            return Err(Refusal::new(format!(
                "you already hold {held} names, the most this broker allows per user \
                 (max_names_per_user); release one first (broker release NAME)"
            )));
        }
        if let Err(wait) = self.server.claims.check(user.id) {
            self.server.metrics.limit_hit(Limit::ClaimsPerHour);
            return Err(Refusal::new(format!(
                "you claimed {} names within the last hour, the most this broker allows \
                 (max_claims_per_hour); try again in {} s",
                limits.claims_per_hour,
                wait.as_secs().max(1)
            )));
        }
        Ok(())
    }

    /// Takes back a claim made for a bind that failed.
    async fn unclaim(&self, name: &str) {
        if let Err(e) = self.server.store.release(&self.actor(), name).await {
            warn!(%name, error = %e, "could not release a claim whose bind failed");
        }
    }

    /// A public TCP port for `-R tcp:…`: the one asked for, else the one this forward had
    /// before (within the grace period), else any free one (if the user may hold another).
    fn tcp_port(&self, user: &User, preferred: Option<u16>) -> Result<(u16, StickyKey), Refusal> {
        let ports = self
            .server
            .tcp_ports
            .clone()
            .ok_or_else(|| Refusal::new("raw TCP tunnels are not enabled on this broker"))?;
        let sticky = StickyKey {
            key: self.key(),
            address: "tcp".into(),
            ordinal: self.lock().tcp_count,
        };
        let registry = &self.server.registry;
        let remembered = registry.sticky(&sticky).and_then(|n| tcp_port(&n));
        let fresh = || {
            // Checked again, atomically, by the bind; this only spares opening a listener.
            let held = registry.held_by(user.id).tcp_ports;
            if held >= registry.owner_limits().tcp_ports {
                self.server.metrics.limit_hit(Limit::TcpPortsPerUser);
                return Err(BindError::TooManyTcpPorts(held).to_string());
            }
            ports.allocate(None)
        };
        let port = match (preferred, remembered) {
            (Some(p), _) => ports.allocate(Some(p)),
            (None, Some(p)) => ports.allocate(Some(p)).or_else(|_| fresh()),
            (None, None) => fresh(),
        }
        .map_err(Refusal::new)?;
        Ok((port, sticky))
    }

    /// Whether this session forwards `name` already.
    fn holds(&self, name: &str) -> bool {
        self.lock().forwards.holds_name(name)
    }
}

pub(crate) fn display_addr(address: &str) -> &str {
    if address.is_empty() { "*" } else { address }
}
