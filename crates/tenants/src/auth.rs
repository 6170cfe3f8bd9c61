//! Credentials: API tokens and passwords, turned into a [`Caller`].

use std::time::Duration;

use warren_store::{NewToken, User};

use crate::passwords::{dummy_hash, verify_password};
use crate::{Caller, CreatedToken, Result, Scope, ServiceError, Tenants, TokenView, Via, tokens};

/// A token's `last_used_at` is written at most this often (not on every request).
const TOUCH_EVERY: i64 = 60;
/// Longest token lifetime one may ask for.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

fn token_view(t: warren_store::ApiToken, user: &str) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name,
        hint: t.hint,
        scope: t.scope,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        created_at: t.created_at,
        user: user.to_owned(),
    }
}

/// One answer for every way a token can be wrong, so a prober learns nothing.
fn bad_token() -> ServiceError {
    ServiceError::Unauthorized("the token is not valid (wrong, expired or revoked)".into())
}

impl Tenants {
    /// The caller a bearer token stands for. Revocation and a disabled user take effect on the
    /// next request: there is no cache between the store and this check.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller> {
        if !tokens::looks_like_token(token) {
            return Err(bad_token());
        }
        let (t, user) = self
            .store
            .token_by_hash(&tokens::hash(token))
            .await?
            .ok_or_else(bad_token)?;
        let now = warren_store::now();
        if t.expires_at.is_some_and(|e| e <= now) || user.disabled {
            return Err(bad_token());
        }
        if t.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY) {
            self.store.touch_token(t.id, now).await?;
        }
        let scope: Scope = t.scope.parse()?;
        Ok(Caller::new(user, scope, Via::Token(t.name)))
    }

    /// Checks a password, taking as long for an unknown user or one without a password as for
    /// a wrong password (argon2 runs on a blocking thread either way). One answer for all
    /// failures.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<User> {
        let found = self.store.password_of(name).await?;
        let (user, hash) = match found {
            Some((u, Some(h))) if !u.disabled => (Some(u), h),
            _ => (None, dummy_hash().to_owned()),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|e| ServiceError::Internal(format!("password check: {e}")))?;
        match (ok, user) {
            (true, Some(u)) => Ok(u),
            _ => Err(ServiceError::Unauthorized(
                "wrong user name or password".into(),
            )),
        }
    }

    /// Tokens of `user` (default: the caller).
    pub async fn tokens(&self, caller: &Caller, user: Option<&str>) -> Result<Vec<TokenView>> {
        caller.require(Scope::Read)?;
        let owner = match user {
            Some(n) => self.find_user(caller, n).await?,
            None => caller.user.clone(),
        };
        Ok(self
            .store
            .list_tokens(Some(owner.id))
            .await?
            .into_iter()
            .map(|t| token_view(t, &owner.name))
            .collect())
    }

    /// Creates a token for `user` (default: the caller) with at most the caller's own scope;
    /// the secret is in the answer and nowhere else.
    pub async fn create_token(
        &self,
        caller: &Caller,
        user: Option<&str>,
        name: &str,
        scope: Scope,
        lifetime: Option<Duration>,
    ) -> Result<CreatedToken> {
        caller.require(Scope::Write)?;
        let owner = match user {
            Some(n) => self.find_user(caller, n).await?,
            None => caller.user.clone(),
        };
        if owner.id != caller.user.id {
            caller.require(Scope::Admin)?;
        }
        if scope > caller.scope {
            return Err(ServiceError::Forbidden(format!(
                "a {} credential cannot create a {scope} token",
                caller.scope
            )));
        }
        if scope == Scope::Admin && !owner.is_admin {
            return Err(ServiceError::invalid(
                "scope",
                format!("{} is not an admin", owner.name),
            ));
        }
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(ServiceError::invalid(
                "name",
                "use 1-64 printable characters",
            ));
        }
        let expires_at = match lifetime {
            Some(d) if d.is_zero() || d > MAX_TOKEN_LIFETIME => {
                return Err(ServiceError::invalid(
                    "expires",
                    "use a lifetime from 1 s to 5 years",
                ));
            }
            Some(d) => Some(warren_store::now() + d.as_secs() as i64),
            None => None,
        };
        let secret = tokens::generate();
        let t = self
            .store
            .create_token(
                &caller.actor(),
                &NewToken {
                    user_id: owner.id,
                    name: name.to_owned(),
                    hash: tokens::hash(&secret),
                    hint: tokens::hint(&secret),
                    scope: scope.as_str().to_owned(),
                    expires_at,
                },
            )
            .await?;
        Ok(CreatedToken {
            token: secret,
            info: token_view(t, &owner.name),
        })
    }

    /// Revokes a token by id: one's own, or anyone's (admin). Takes effect on the next request.
    pub async fn revoke_token(&self, caller: &Caller, id: i64) -> Result<TokenView> {
        caller.require(Scope::Write)?;
        let not_found = || ServiceError::NotFound(format!("no token with id {id}"));
        let t = self
            .store
            .list_tokens(None)
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(not_found)?;
        if !caller.sees(t.user_id) {
            return Err(not_found());
        }
        let owner = self
            .store
            .user_by_id(t.user_id)
            .await?
            .map(|u| u.name)
            .unwrap_or_default();
        let t = self.store.revoke_token(&caller.actor(), id).await?;
        Ok(token_view(t, &owner))
    }
}

/// How long the first admin's setup link stays valid.
pub const SETUP_LINK_LIFETIME: Duration = Duration::from_secs(3600);

impl Tenants {
    /// A new one-time setup token when no admin has a password yet (else `None`): what
    /// `broker serve` prints as a link at start.
    pub async fn setup_token(&self) -> Result<Option<String>> {
        if self.store.admin_has_password().await? {
            return Ok(None);
        }
        let token = tokens::generate_with(tokens::SETUP_PREFIX);
        let expires = warren_store::now() + SETUP_LINK_LIFETIME.as_secs() as i64;
        self.store
            .create_setup_token(&tokens::hash(&token), expires)
            .await?;
        Ok(Some(token))
    }

    /// Uses a setup token: `name` (an existing admin without a password, or a new admin) gets
    /// `password`. Checks everything it can before it spends the single-use token.
    pub async fn first_admin(&self, token: &str, name: &str, password: &str) -> Result<User> {
        if self.store.admin_has_password().await? {
            return Err(ServiceError::Conflict(
                "setup is already done; sign in instead".into(),
            ));
        }
        crate::check_user_name(name)?;
        let hash = crate::passwords::hash_password(password)?;
        let existing = self.store.user_by_name(name).await?;
        if existing.as_ref().is_some_and(|u| !u.is_admin) {
            return Err(ServiceError::Conflict(format!(
                "{name:?} exists and is not an admin"
            )));
        }
        let valid = tokens::looks_like(token, tokens::SETUP_PREFIX)
            && self
                .store
                .use_setup_token(&tokens::hash(token), warren_store::now())
                .await?;
        if !valid {
            return Err(ServiceError::Unauthorized(
                "the setup link is wrong, used or expired; restart `broker serve` for a new one"
                    .into(),
            ));
        }
        let actor = format!("{name}/setup");
        if existing.is_none() {
            self.store.create_user(&actor, name, true).await?;
        }
        Ok(self.store.set_password(&actor, name, Some(&hash)).await?)
    }
}

/// Parses a lifetime such as `30d`, `12h`, `90m`, `3600s` or `2w`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        ServiceError::invalid(
            "expires",
            format!("{s:?}: use a number and s, m, h, d or w (30d)"),
        )
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").ok(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7200)));
        for bad in ["", "d", "10", "10y", "-1d", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
