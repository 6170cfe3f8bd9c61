//! SSH keys. The front doors parse the key line (the SSH crate owns OpenSSH's formats) and hand
//! over a [`NewKey`].

use warren_store::NewKey;

use crate::{Caller, KeyView, Result, Scope, ServiceError, Tenants};

pub(crate) fn view(k: warren_store::SshKey) -> KeyView {
    KeyView {
        fingerprint: k.fingerprint,
        algorithm: k.algorithm,
        comment: k.comment,
        public_key: k.public_key,
        user: k.user_name,
        created_at: k.created_at,
    }
}

/// Longest key comment kept: it is shown in lists and pages, not a place for essays.
const MAX_COMMENT: usize = 200;

impl Tenants {
    /// Keys of `user` (default: the caller's own); admins may name anyone, or `*` for all.
    pub async fn keys(&self, caller: &Caller, user: Option<&str>) -> Result<Vec<KeyView>> {
        caller.require(Scope::Read)?;
        let filter = match user {
            Some("*") if caller.is_admin() => None,
            Some(name) => Some(self.find_user(caller, name).await?.name),
            None => Some(caller.user.name.clone()),
        };
        Ok(self
            .store
            .list_keys(filter.as_deref())
            .await?
            .into_iter()
            .map(view)
            .collect())
    }

    /// Registers a key for `user` (default: the caller).
    pub async fn add_key(
        &self,
        caller: &Caller,
        user: Option<&str>,
        mut key: NewKey,
    ) -> Result<KeyView> {
        caller.require(Scope::Write)?;
        let owner = match user {
            Some(name) => self.find_user(caller, name).await?,
            None => caller.user.clone(),
        };
        if owner.id != caller.user.id {
            caller.require(Scope::Admin)?;
        }
        key.comment = key
            .comment
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_COMMENT)
            .collect();
        Ok(view(
            self.store
                .add_key(&caller.actor(), &owner.name, &key)
                .await?,
        ))
    }

    /// Removes a key by fingerprint: the caller's own, or anyone's for an admin. Sessions
    /// authenticated with it are dropped (the watcher sees the audit row).
    pub async fn remove_key(&self, caller: &Caller, fingerprint: &str) -> Result<KeyView> {
        caller.require(Scope::Write)?;
        let not_found = || ServiceError::NotFound(format!("no key with fingerprint {fingerprint}"));
        let (key, _) = self
            .store
            .key_by_fingerprint(fingerprint)
            .await?
            .ok_or_else(not_found)?;
        if !caller.sees(key.user_id) {
            return Err(not_found());
        }
        Ok(view(
            self.store.remove_key(&caller.actor(), fingerprint).await?,
        ))
    }
}
