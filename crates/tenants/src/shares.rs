//! Share links: a URL that lets its holder past a name's basic auth without the password,
//! until it expires, for a number of uses or unlimited, revocable at any time.
//!
//! A link is `https://NAME.DOMAIN/.well-known/warren-share/TOKEN`; the token is 256 random
//! bits, shown once, and only its SHA-256 is stored. The edge redeems it (one use, atomically in
//! the store), sets a cookie for that host only, signed with the broker's share key, and
//! redirects to the path. The cookie is honoured until the link expires, unless the link is
//! revoked.
//!
//! A link opens a site that asks for a password; on a name with no basic-auth users it would
//! open nothing (the site is public), so creating one there is refused.

use std::time::Duration;

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use warren_registry::RouteKind;
use warren_registry::access::SHARE_PATH;
use warren_store::{NewShare, ShareLink};

use crate::rules::{http_only, reservation_for};
use crate::{Caller, Result, ServiceError, Tenants};

/// The longest a link may live: past that, a password is the better tool.
pub const MAX_EXPIRY: Duration = Duration::from_secs(90 * 86400);
/// The shortest.
pub const MIN_EXPIRY: Duration = Duration::from_secs(60);

/// A share link as shown: never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShareView {
    /// Its id (to revoke it).
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Uses left; `None` for unlimited.
    pub uses_left: Option<i64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Who made it.
    pub created_by: String,
    /// `live`, `used up` (its cookies still work), `expired` or `revoked`.
    pub state: &'static str,
}

impl ShareView {
    pub(crate) fn of(s: &ShareLink, now: i64) -> Self {
        let state = if s.revoked {
            "revoked"
        } else if s.expires_at <= now {
            "expired"
        } else if s.uses_left == Some(0) {
            "used up"
        } else {
            "live"
        };
        Self {
            id: s.id,
            created_at: s.created_at,
            expires_at: s.expires_at,
            uses_left: s.uses_left,
            revoked: s.revoked,
            created_by: s.created_by.clone(),
            state,
        }
    }
}

impl ShareView {
    /// The heading of [`ShareView::line`]s.
    pub const HEADING: &'static str = "ID    STATE    USES       EXPIRES";

    /// One line of a listing (the CLI's and the SSH command's), within 80 columns.
    pub fn line(&self) -> String {
        let uses = self
            .uses_left
            .map_or_else(|| "unlimited".to_owned(), |n| format!("{n} left"));
        format!(
            "{:<5} {:<8} {:<10} expires {:<8} by {}",
            self.id,
            self.state,
            uses,
            crate::when(Some(self.expires_at)),
            crate::fit(&self.created_by, 24)
        )
    }
}

/// A link just made: the only time its URL is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CreatedShare {
    /// The full link to hand out.
    pub url: String,
    /// The stored link.
    pub share: ShareView,
}

/// The hex SHA-256 of a link's token: what the store keeps and looks links up by. Tokens are
/// 256 random bits, so a fast hash is enough (argon2 is for passwords people choose).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes a link to `name` that expires after `expires` and works `uses` times (`None`:
/// unlimited until it expires).
pub async fn create(
    ctx: &Tenants,
    caller: &Caller,
    name: &str,
    expires: Duration,
    uses: Option<i64>,
) -> Result<CreatedShare> {
    let r = reservation_for(ctx, caller, name, true).await?;
    http_only(&r, "basic auth and share links")?;
    if !(MIN_EXPIRY..=MAX_EXPIRY).contains(&expires) {
        return Err(ServiceError::invalid(
            "expires",
            format!(
                "a link lives between {} minute and {} days",
                MIN_EXPIRY.as_secs() / 60,
                MAX_EXPIRY.as_secs() / 86400
            ),
        ));
    }
    if let Some(n) = uses
        && n < 1
    {
        return Err(ServiceError::invalid(
            "uses",
            "use at least 1, or leave it out for unlimited",
        ));
    }
    let rules = ctx.store.rules(name).await?;
    if rules.basic_users.is_empty() {
        return Err(ServiceError::invalid(
            "name",
            format!(
                "{name} asks no password, so a share link would open nothing: it is public. \
                 Add a basic-auth user first (rules {name} auth add USER), then share links \
                 let visitors in without the password"
            ),
        ));
    }
    let bytes: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let share = ctx
        .store
        .create_share(
            &caller.actor(),
            name,
            &NewShare {
                token_hash: token_hash(&token),
                expires_at: warren_store::now() + expires.as_secs() as i64,
                uses,
            },
        )
        .await?;
    Ok(CreatedShare {
        url: format!(
            "{}{SHARE_PATH}{token}",
            ctx.settings.urls.url(RouteKind::Http, name)
        ),
        share: ShareView::of(&share, warren_store::now()),
    })
}

/// The links of `name`, oldest first.
pub async fn list(ctx: &Tenants, caller: &Caller, name: &str) -> Result<Vec<ShareView>> {
    reservation_for(ctx, caller, name, false).await?;
    let now = warren_store::now();
    Ok(ctx
        .store
        .rules(name)
        .await?
        .shares
        .iter()
        .map(|s| ShareView::of(s, now))
        .collect())
}

/// Revokes link `id` of `name`: the link and every cookie it gave stop working within a
/// second.
pub async fn revoke(ctx: &Tenants, caller: &Caller, name: &str, id: i64) -> Result<ShareView> {
    reservation_for(ctx, caller, name, true).await?;
    let s = ctx.store.revoke_share(&caller.actor(), name, id).await?;
    Ok(ShareView::of(&s, warren_store::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_registry::access::is_share_token;

    #[test]
    fn tokens() {
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(is_share_token(&t));
        assert!(!is_share_token(&t[1..]));
        assert!(!is_share_token(&format!("{}.", &t[1..])));
        assert_eq!(token_hash("x").len(), 64);
    }
}
