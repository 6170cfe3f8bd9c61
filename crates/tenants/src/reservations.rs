//! Reserved names: a tenant's own subdomains (and TCP ports).

use warren_registry::{Lookup, names, tcp_name};

use crate::{Caller, ReservationView, Result, Scope, ServiceError, Tenants};

/// The kinds a reservation can have.
pub const KINDS: [&str; 3] = ["http", "tls", "tcp"];

impl Tenants {
    fn reservation_view(&self, r: warren_store::Reservation) -> ReservationView {
        let live = self
            .registry
            .as_ref()
            .is_some_and(|reg| matches!(reg.lookup(&r.name), Lookup::Live(_)));
        ReservationView {
            url: self.settings.urls.reservation_url(&r.kind, &r.name),
            name: r.name,
            kind: r.kind,
            user: r.user_name,
            live,
            created_at: r.created_at,
        }
    }

    /// Reservations of `user` (default: the caller); `*` for everyone's (admin).
    pub async fn reservations(
        &self,
        caller: &Caller,
        user: Option<&str>,
    ) -> Result<Vec<ReservationView>> {
        caller.require(Scope::Read)?;
        let filter = match user {
            Some("*") if caller.is_admin() => None,
            Some(name) => Some(self.find_user(caller, name).await?.name),
            None => Some(caller.user.name.clone()),
        };
        Ok(self
            .store
            .list_reservations(filter.as_deref())
            .await?
            .into_iter()
            .map(|r| self.reservation_view(r))
            .collect())
    }

    /// One reservation the caller may see, else 404.
    pub async fn reservation(&self, caller: &Caller, name: &str) -> Result<ReservationView> {
        caller.require(Scope::Read)?;
        let r = self.own_reservation(caller, name).await?;
        Ok(self.reservation_view(r))
    }

    /// The stored reservation of `name` if the caller may see it; 404 otherwise.
    pub async fn own_reservation(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<warren_store::Reservation> {
        let not_found = || ServiceError::NotFound(format!("no reservation named {name:?}"));
        let r = self.store.reservation(name).await?.ok_or_else(not_found)?;
        if caller.sees(r.user_id) {
            Ok(r)
        } else {
            Err(not_found())
        }
    }

    /// The stored name for `name` of `kind`: a DNS label for `http`/`tls`, `tcp:PORT` (from
    /// `PORT` or `tcp:PORT`) for `tcp`.
    pub fn reservation_name(&self, name: &str, kind: &str) -> Result<String> {
        match kind {
            "http" | "tls" => {
                names::validate(name).map_err(|e| ServiceError::invalid("name", e.to_string()))?;
                if self.settings.reserved_labels.iter().any(|l| l == name) {
                    return Err(ServiceError::invalid(
                        "name",
                        format!("{name:?} is kept for the broker itself"),
                    ));
                }
                Ok(name.to_owned())
            }
            "tcp" => {
                let digits = name.strip_prefix("tcp:").unwrap_or(name);
                let (lo, hi) = self.settings.tcp_ports;
                match digits.parse::<u16>() {
                    Ok(p) if (lo..=hi).contains(&p) => Ok(tcp_name(p)),
                    _ => Err(ServiceError::invalid(
                        "name",
                        format!(
                            "a tcp reservation is named tcp:PORT, PORT from {lo} to {hi} (e.g. tcp:{lo})"
                        ),
                    )),
                }
            }
            other => Err(ServiceError::invalid(
                "kind",
                format!("{other:?} is not a kind: use http, tls or tcp"),
            )),
        }
    }

    /// Reserves `name` of `kind` for `user` (default: the caller), within their
    /// `max_reservations` quota. Reserving one's own name again returns it unchanged.
    pub async fn reserve(
        &self,
        caller: &Caller,
        user: Option<&str>,
        name: &str,
        kind: &str,
    ) -> Result<ReservationView> {
        caller.require(Scope::Write)?;
        let name = self.reservation_name(name, kind)?;
        let owner = match user {
            Some(u) => self.find_user(caller, u).await?,
            None => caller.user.clone(),
        };
        if owner.id != caller.user.id {
            caller.require(Scope::Admin)?;
        }
        if let Some(held) = self.store.reservation(&name).await? {
            if held.user_id != owner.id {
                return Err(ServiceError::Conflict(format!("name {name:?} is taken")));
            }
            if held.kind != kind {
                return Err(ServiceError::Conflict(format!(
                    "{name:?} is already reserved as {}; release it first to change its kind",
                    held.kind
                )));
            }
            return Ok(self.reservation_view(held));
        }
        let quota = self.quotas_of(owner.id).await?.max_reservations;
        let held = self.store.list_reservations(Some(&owner.name)).await?.len() as i64;
        if held >= quota {
            return Err(ServiceError::Quota(format!(
                "{} already holds {held} names, the most allowed (quota max_reservations = {quota})",
                owner.name
            )));
        }
        let r = self
            .store
            .reserve(&caller.actor(), &owner.name, &name, kind)
            .await?;
        if let Some(reg) = &self.registry {
            reg.mark_reserved(&r.name);
        }
        Ok(self.reservation_view(r))
    }

    /// Releases one of the caller's names (or anyone's, admin).
    pub async fn release(&self, caller: &Caller, name: &str) -> Result<ReservationView> {
        caller.require(Scope::Write)?;
        let r = self.own_reservation(caller, name).await?;
        let r = self.store.release(&caller.actor(), &r.name).await?;
        Ok(self.reservation_view(r))
    }
}
