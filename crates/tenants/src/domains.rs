//! Custom domains: a tenant attaches their own host name to one of their reservations, puts
//! two records in their zone, and the broker serves the name once DNS shows them.
//!
//! Who may do what is decided here, for the API, the SSH commands and the CLI alike: another
//! tenant's reservation or domain is a 404; a host name another tenant has verified is a 409;
//! a host name that is not a tenant's to attach (the broker's own names, IPs) is a 422 naming
//! the `domain` field. What proves a domain, and what a check does to its state, is
//! `warren-domains`'; [`Tenants::check_domain`] runs one check and stores it, for the "verify
//! now" of the three doors and for the broker's background task.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use warren_domains::{Checker, Expected, OwnNames, State, Status, Verdict};
use warren_store::{AuditEvent, CustomDomain, DomainCheck, DomainFilter, Reservation, StoreError};

use crate::{Caller, Result, Scope, ServiceError, Tenants};

/// What checking custom domains needs: a resolver and the broker's public addresses.
#[derive(Debug)]
pub struct DomainSettings {
    /// Asks DNS (`dns_resolvers`, else the system's).
    pub checker: Checker,
    /// `public_ipv4` / `public_ipv6`: A/AAAA records equal to these prove a domain as well as a
    /// CNAME does (an apex cannot have a CNAME).
    pub addrs: Vec<IpAddr>,
    /// `domain_grace_secs`: how long a domain whose proof is gone is still served.
    pub grace_secs: i64,
}

/// A DNS record the tenant must create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DnsRecordView {
    /// `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The record's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A custom domain as the API, the SSH commands and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DomainView {
    /// The host name (`app.their-domain.org`).
    pub domain: String,
    /// The reservation that serves it.
    pub reservation: String,
    /// The reservation's holder.
    pub owner: String,
    /// `pending` (not proven yet), `verified`, or `failing` (its proof is gone; served until
    /// the grace period ends).
    pub state: String,
    /// Whether the broker routes it right now.
    pub serving: bool,
    /// The records that prove it: a CNAME to the reservation's host name and a TXT holding
    /// the domain's token.
    pub records: Vec<DnsRecordView>,
    /// Unix seconds.
    pub created_at: i64,
    /// When DNS last proved it (Unix seconds).
    pub verified_at: Option<i64>,
    /// When it was last looked up (Unix seconds).
    pub last_checked: Option<i64>,
    /// What the last look-up found missing.
    pub last_error: Option<String>,
    /// Since when its proof has been missing (Unix seconds).
    pub failing_since: Option<i64>,
}

fn status_of(d: &CustomDomain) -> Status {
    Status {
        state: State::from_word(&d.state),
        verified_at: d.verified_at,
        failing_since: d.failing_since,
    }
}

impl Tenants {
    /// Lets this service check custom domains (and show whether they are served).
    pub fn with_domains(mut self, settings: DomainSettings) -> Self {
        self.domains = Some(Arc::new(settings));
        self
    }

    /// The host name a reservation's custom domains must CNAME to.
    pub fn domain_target(&self, reservation: &str) -> String {
        format!("{reservation}.{}", self.settings.urls.domain)
    }

    fn domain_grace(&self) -> i64 {
        self.domains.as_ref().map_or(86_400, |d| d.grace_secs)
    }

    /// How the domain `d` is shown.
    pub fn domain_view(&self, d: &CustomDomain) -> DomainView {
        let now = warren_store::now();
        DomainView {
            serving: warren_domains::serving(status_of(d), now, self.domain_grace()),
            records: vec![
                DnsRecordView {
                    kind: "CNAME".into(),
                    name: d.hostname.clone(),
                    value: self.domain_target(&d.reservation),
                },
                DnsRecordView {
                    kind: "TXT".into(),
                    name: warren_domains::challenge_name(&d.hostname),
                    value: d.token.clone(),
                },
            ],
            domain: d.hostname.clone(),
            reservation: d.reservation.clone(),
            owner: d.user_name.clone(),
            state: d.state.clone(),
            created_at: d.created_at,
            verified_at: d.verified_at,
            last_checked: d.last_checked,
            last_error: d.last_error.clone(),
            failing_since: d.failing_since,
        }
    }

    /// The caller's custom domains: those of reservation `name`, else all of theirs (everyone's
    /// with `all`, admin).
    pub async fn domains(
        &self,
        caller: &Caller,
        name: Option<&str>,
        all: bool,
    ) -> Result<Vec<DomainView>> {
        caller.require(Scope::Read)?;
        let filter = match name {
            Some(name) => {
                let r = self.own_reservation(caller, name).await?;
                return self.views(DomainFilter::Reservation(&r.name)).await;
            }
            None if all => {
                caller.require(Scope::Admin)?;
                DomainFilter::All
            }
            None => DomainFilter::User(caller.user.id),
        };
        self.views(filter).await
    }

    async fn views(&self, filter: DomainFilter<'_>) -> Result<Vec<DomainView>> {
        let rows = self.store.list_domains(filter).await?;
        Ok(rows.iter().map(|d| self.domain_view(d)).collect())
    }

    /// One custom domain of reservation `name`; 404 if the caller may not see it.
    pub async fn domain(&self, caller: &Caller, name: &str, host: &str) -> Result<DomainView> {
        caller.require(Scope::Read)?;
        let d = self.find_domain(caller, Some(name), host).await?;
        Ok(self.domain_view(&d))
    }

    /// The caller's row for `host` (on reservation `name`, when given); 404 otherwise, for
    /// another tenant's too.
    async fn find_domain(
        &self,
        caller: &Caller,
        name: Option<&str>,
        host: &str,
    ) -> Result<CustomDomain> {
        if let Some(name) = name {
            self.own_reservation(caller, name).await?;
        }
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut rows: Vec<CustomDomain> = self
            .store
            .list_domains(DomainFilter::Hostname(&host))
            .await?
            .into_iter()
            .filter(|d| caller.sees(d.user_id) && name.is_none_or(|n| d.reservation == n))
            .collect();
        let missing = || match name {
            Some(n) => format!("{n} has no custom domain {host:?}"),
            None => format!("no custom domain {host:?}"),
        };
        match rows.len() {
            0 => Err(ServiceError::NotFound(missing())),
            1 => Ok(rows.remove(0)),
            _ => {
                let on: Vec<&str> = rows.iter().map(|d| d.reservation.as_str()).collect();
                Err(ServiceError::invalid(
                    "domain",
                    format!(
                        "{host} is attached to several names ({}); say which",
                        on.join(", ")
                    ),
                ))
            }
        }
    }

    /// Attaches `host` to the caller's reservation `name`, pending until DNS proves it (the
    /// answer lists the records to create). Attaching it again to the same name returns it
    /// unchanged.
    pub async fn attach_domain(
        &self,
        caller: &Caller,
        name: &str,
        host: &str,
    ) -> Result<DomainView> {
        caller.require(Scope::Write)?;
        let r = self.own_reservation(caller, name).await?;
        check_kind(&r)?;
        let console = self
            .settings
            .reserved_labels
            .first()
            .map(|l| format!("{l}.{}", self.settings.urls.domain))
            .unwrap_or_default();
        let own = OwnNames {
            domain: self.settings.urls.domain.clone(),
            console_host: console,
        };
        let host = warren_domains::validate(host, &own)
            .map_err(|e| ServiceError::invalid("domain", e.to_string()))?;
        for d in self
            .store
            .list_domains(DomainFilter::Hostname(&host))
            .await?
        {
            if d.reservation_id == r.id {
                return Ok(self.domain_view(&d));
            }
            if d.user_id == r.user_id {
                return Err(ServiceError::Conflict(format!(
                    "{host} is already attached to {}; remove it there first",
                    d.reservation
                )));
            }
            if d.state != State::Pending.as_str() {
                return Err(ServiceError::Conflict(format!(
                    "{host} is verified for another user's name; only one tenant can hold a \
                     domain"
                )));
            }
        }
        let token = warren_domains::new_token();
        let d = self
            .store
            .add_domain(&caller.actor(), &r.name, &host, &token)
            .await
            .map_err(|e| match e {
                StoreError::DomainTaken(h) => {
                    ServiceError::Conflict(format!("{h} is already attached"))
                }
                other => other.into(),
            })?;
        Ok(self.domain_view(&d))
    }

    /// Detaches the caller's domain `host` (from reservation `name`, when given).
    pub async fn detach_domain(
        &self,
        caller: &Caller,
        name: Option<&str>,
        host: &str,
    ) -> Result<DomainView> {
        caller.require(Scope::Write)?;
        let d = self.find_domain(caller, name, host).await?;
        let d = self.store.remove_domain(&caller.actor(), d.id).await?;
        Ok(self.domain_view(&d))
    }

    /// Checks the caller's domain `host` now (instead of at its next scheduled check) and
    /// returns what DNS showed.
    pub async fn verify_domain(
        &self,
        caller: &Caller,
        name: Option<&str>,
        host: &str,
    ) -> Result<DomainView> {
        caller.require(Scope::Write)?;
        let d = self.find_domain(caller, name, host).await?;
        let d = self.check_domain(&d, &caller.actor()).await?;
        let mut e = AuditEvent::new(
            &caller.actor(),
            warren_store::AuditAction::DomainCheck,
            &d.hostname,
            Some(d.user_id),
        );
        e.detail = d.state.clone();
        self.store.record(&e).await?;
        Ok(self.domain_view(&d))
    }

    /// Looks `d` up in DNS and stores the outcome (audited when its state changes). A domain
    /// whose proof appears while another tenant holds the name stays pending, and says so.
    pub async fn check_domain(&self, d: &CustomDomain, actor: &str) -> Result<CustomDomain> {
        let settings = self.domains.as_ref().ok_or_else(|| {
            ServiceError::invalid(
                "domain",
                "this broker has no DNS resolver to check domains with",
            )
        })?;
        let expected = Expected {
            token: d.token.clone(),
            target: self.domain_target(&d.reservation),
            addrs: settings.addrs.clone(),
        };
        let verdict = settings.checker.check(&d.hostname, &expected).await;
        let now = warren_store::now();
        let status = warren_domains::next(status_of(d), &verdict, now);
        let error = match &verdict {
            Verdict::Proven => None,
            Verdict::NotProven(why) | Verdict::Unknown(why) => Some(why.clone()),
        };
        let check = DomainCheck {
            state: status.state.as_str().to_owned(),
            verified_at: status.verified_at,
            failing_since: status.failing_since,
            checked_at: now,
            error,
        };
        match self.store.record_domain_check(actor, d.id, &check).await {
            Err(StoreError::DomainTaken(_)) => {
                let held = DomainCheck {
                    state: d.state.clone(),
                    verified_at: d.verified_at,
                    failing_since: d.failing_since,
                    checked_at: now,
                    error: Some(format!(
                        "{} is verified for another user's name",
                        d.hostname
                    )),
                };
                Ok(self.store.record_domain_check(actor, d.id, &held).await?)
            }
            other => Ok(other?),
        }
    }
}

/// 422 for a TCP reservation: a raw port has no host name to route by.
fn check_kind(r: &Reservation) -> Result<()> {
    if r.kind == "tcp" {
        return Err(ServiceError::invalid(
            "name",
            format!(
                "{} is a TCP port: visitors reach it by port, never by host name, so a domain \
                 cannot lead to it; attach domains to http or tls names",
                r.name
            ),
        ));
    }
    Ok(())
}

impl DomainView {
    /// The records to create, one per line (the value on a line of its own, indented, when
    /// the line would pass `width` characters), for terminals.
    pub fn record_lines(&self, width: usize) -> String {
        let mut out = String::new();
        for r in &self.records {
            let line = format!("  {:<5} {} → {}", r.kind, r.name, r.value);
            if line.chars().count() <= width {
                out.push_str(&line);
            } else {
                out.push_str(&format!(
                    "  {:<5} {} →\n        {}",
                    r.kind, r.name, r.value
                ));
            }
            out.push('\n');
        }
        out
    }

    /// One paragraph for a terminal: the domain, where it stands, the records, and what the
    /// last check found missing.
    pub fn describe(&self, width: usize) -> String {
        let served = if self.serving {
            ", served"
        } else {
            ", not served"
        };
        let mut out = format!(
            "{} on {}: {}{served}\n",
            self.domain, self.reservation, self.state
        );
        out.push_str(&self.record_lines(width));
        if let Some(e) = &self.last_error {
            out.push_str(&format!("  last check: {e}\n"));
        }
        out
    }
}
