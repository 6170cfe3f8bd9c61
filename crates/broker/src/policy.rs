//! From the store's rules to the edge's access policies: built for every name at start, and
//! again for one name whenever the audit log says its rules changed (see `watch`). Also the
//! store-backed [`ShareRedeemer`] the edge redeems share links through, and the share key.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tracing::warn;
use warren_edge::{IpNet, Redeemed, ShareRedeemer};
use warren_registry::{AccessPolicy, IpAction, Registry};
use warren_store::{Rules, Store, StoreError};

/// The edge's policy for one reservation's rules at `now`.
pub fn policy_of(rules: &Rules, now: i64) -> AccessPolicy {
    let mut p = AccessPolicy::new(rules.reservation.user_id);
    for r in &rules.ip_rules {
        let action = if r.action == "allow" {
            IpAction::Allow
        } else {
            IpAction::Deny
        };
        match r.cidr.parse::<IpNet>() {
            Ok(net) => p = p.with_net(net, action),
            Err(e) => {
                // The service layer only stores parsed networks; should one be corrupt, keep
                // everyone out rather than drop what may have been a deny entry.
                warn!(name = %rules.reservation.name, cidr = %r.cidr, error = %e, "bad stored CIDR: denying all");
                for all in ["0.0.0.0/0", "::/0"] {
                    if let Ok(net) = all.parse() {
                        p = p.with_net(net, IpAction::Deny);
                    }
                }
            }
        }
    }
    for u in &rules.basic_users {
        p = p.with_user(&u.username, &u.hash);
    }
    for s in &rules.shares {
        p = p.with_share(s.id, s.expires_at, s.is_live(now));
    }
    p
}

/// Every name's policy (names without rules have none).
pub async fn load_all(store: &dyn Store) -> Result<HashMap<String, AccessPolicy>> {
    let now = warren_store::now();
    Ok(store
        .all_rules()
        .await
        .context("cannot load access rules")?
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| (r.reservation.name.clone(), policy_of(r, now)))
        .collect())
}

/// Rebuilds the policy of `name` from the store (none if it was released or has no rules).
pub async fn refresh(store: &dyn Store, registry: &Registry, name: &str) -> Result<()> {
    let policy = match store.rules(name).await {
        Ok(r) if !r.is_empty() => Some(policy_of(&r, warren_store::now())),
        Ok(_) | Err(StoreError::NoSuchReservation(_)) => None,
        Err(e) => return Err(e.into()),
    };
    registry.set_policy(name, policy);
    Ok(())
}

/// The key share cookies are signed with, made on the first start and kept in the store so
/// that every node sharing the database signs and checks the same way.
pub async fn share_key(store: &dyn Store) -> Result<Vec<u8>> {
    let fresh = STANDARD.encode(rand::random::<[u8; 32]>());
    let key = store
        .share_cookie_key(&fresh)
        .await
        .context("cannot load the share-link key")?;
    STANDARD
        .decode(key)
        .context("the stored share-link key is not base64")
}

/// Redeems share links in the store (one atomic statement).
pub struct StoreRedeemer(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl ShareRedeemer for StoreRedeemer {
    async fn redeem(&self, name: &str, token: &str) -> Result<Option<Redeemed>, String> {
        let hash = warren_tenants::shares::token_hash(token);
        self.0
            .redeem_share(name, &hash, warren_store::now())
            .await
            .map(|l| {
                l.map(|l| Redeemed {
                    id: l.id,
                    expires_at: l.expires_at,
                })
            })
            .map_err(|e| e.to_string())
    }
}
