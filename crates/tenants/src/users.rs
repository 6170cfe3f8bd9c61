//! Users: who they are, their quotas, passwords and state.

use warren_store::{Quotas, User};

use crate::passwords::hash_password;
use crate::{Caller, Result, Scope, ServiceError, Tenants, UserView};

/// The highest per-tunnel bandwidth quota accepted: 1 TB/s, beyond any link.
const MAX_BYTES_PER_SEC: i64 = 1_000_000_000_000;

/// Login names: what `broker user add` has always accepted.
pub fn check_user_name(name: &str) -> Result<()> {
    // `.` and `..` would be path segments in every URL that names the user (/api/v1/users/..).
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "name",
            format!(
                "user name {name:?}: use 1-64 of lowercase letters, digits, '-', '_', '.' (not . or .. alone)"
            ),
        ))
    }
}

impl Tenants {
    async fn view(&self, u: User) -> Result<UserView> {
        let own = self.store.quotas(u.id).await?;
        let has_password = matches!(self.store.password_of(&u.name).await?, Some((_, Some(_))));
        Ok(UserView {
            id: u.id,
            quotas: self.settings.default_quotas.apply(&own),
            name: u.name,
            is_admin: u.is_admin,
            disabled: u.disabled,
            has_password,
            created_at: u.created_at,
        })
    }

    /// The caller themselves.
    pub async fn me(&self, caller: &Caller) -> Result<UserView> {
        let u = self
            .store
            .user_by_id(caller.user.id)
            .await?
            .ok_or_else(|| ServiceError::Unauthorized("your user no longer exists".into()))?;
        self.view(u).await
    }

    /// One user: the caller, or anyone for an admin.
    pub async fn user(&self, caller: &Caller, name: &str) -> Result<UserView> {
        let u = self.find_user(caller, name).await?;
        self.view(u).await
    }

    /// A user the caller may see, else 404.
    pub(crate) async fn find_user(&self, caller: &Caller, name: &str) -> Result<User> {
        let not_found = || ServiceError::NotFound(format!("no user named {name:?}"));
        let u = self.store.user_by_name(name).await?.ok_or_else(not_found)?;
        if caller.sees(u.id) {
            Ok(u)
        } else {
            Err(not_found())
        }
    }

    /// Every user (admin).
    pub async fn users(&self, caller: &Caller) -> Result<Vec<UserView>> {
        caller.require(Scope::Admin)?;
        let mut out = Vec::new();
        for u in self.store.list_users().await? {
            out.push(self.view(u).await?);
        }
        Ok(out)
    }

    /// Creates a user (admin), with a password when given.
    pub async fn create_user(
        &self,
        caller: &Caller,
        name: &str,
        is_admin: bool,
        password: Option<&str>,
    ) -> Result<UserView> {
        caller.require(Scope::Admin)?;
        check_user_name(name)?;
        let hash = password.map(hash_password).transpose()?;
        let u = self
            .store
            .create_user(&caller.actor(), name, is_admin)
            .await?;
        if let Some(hash) = hash {
            self.store
                .set_password(&caller.actor(), name, Some(&hash))
                .await?;
        }
        self.view(u).await
    }

    /// Disables (their tunnels drop at once, their sessions end) or re-enables a user (admin).
    pub async fn set_disabled(
        &self,
        caller: &Caller,
        name: &str,
        disabled: bool,
    ) -> Result<UserView> {
        caller.require(Scope::Admin)?;
        let target = self.find_user(caller, name).await?;
        if disabled && target.id == caller.user.id {
            return Err(ServiceError::invalid("name", "you cannot disable yourself"));
        }
        let u = self
            .store
            .set_user_disabled(&caller.actor(), name, disabled)
            .await?;
        if disabled {
            self.store
                .end_login_sessions_of(&caller.actor(), u.id)
                .await?;
            // In the serving process the routes go now; the watcher also disconnects the
            // sessions when it sees the audit row (and does both on other processes' changes).
            if let Some(reg) = &self.registry {
                reg.drop_owner(u.id);
            }
        }
        self.view(u).await
    }

    /// Sets a user's quotas (admin); `None` fields fall back to the broker's defaults.
    pub async fn set_quotas(
        &self,
        caller: &Caller,
        name: &str,
        quotas: Quotas,
    ) -> Result<UserView> {
        caller.require(Scope::Admin)?;
        for (field, v) in [
            ("max_reservations", quotas.max_reservations),
            ("max_tunnels", quotas.max_tunnels),
            ("max_visitor_connections", quotas.max_visitor_connections),
        ] {
            if v.is_some_and(|v| !(0..=1_000_000).contains(&v)) {
                return Err(ServiceError::invalid(
                    field,
                    "use a number from 0 to 1000000",
                ));
            }
        }
        if quotas
            .max_tunnel_bytes_per_sec
            .is_some_and(|v| !(0..=MAX_BYTES_PER_SEC).contains(&v))
        {
            return Err(ServiceError::invalid(
                "max_tunnel_bytes_per_sec",
                "use a number of bytes per second from 0 (no limit) to 1000000000000",
            ));
        }
        self.find_user(caller, name).await?;
        self.store
            .set_quotas(&caller.actor(), name, &quotas)
            .await?;
        self.user(caller, name).await
    }

    /// Sets a password: one's own (write scope), or anyone's (admin). Every console session of
    /// that user ends, so a reset locks out whoever knew the old one.
    pub async fn set_password(&self, caller: &Caller, name: &str, password: &str) -> Result<()> {
        caller.require(Scope::Write)?;
        let target = self.find_user(caller, name).await?;
        if target.id != caller.user.id {
            caller.require(Scope::Admin)?;
        }
        let hash = hash_password(password)?;
        self.store
            .set_password(&caller.actor(), name, Some(&hash))
            .await?;
        self.store
            .end_login_sessions_of(&caller.actor(), target.id)
            .await?;
        Ok(())
    }

    /// The quotas in force for a user id.
    pub async fn quotas_of(&self, user_id: i64) -> Result<crate::DefaultQuotas> {
        let own = self.store.quotas(user_id).await?;
        Ok(self.settings.default_quotas.apply(&own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(check_user_name("alice.b-2_x").is_ok());
        for bad in ["", "Alice", "a b", "ä", ".", "..", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }
}
