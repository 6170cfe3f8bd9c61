//! Access rules of a reservation: basic-auth users, IP allow and deny lists. The edge enforces
//! them (see `warren-edge`'s `access` module); this is the one place that decides who may
//! change them and what a valid rule is, for the CLI, the SSH commands and the API alike.
//!
//! Basic auth (and share links, see [`crate::shares`]) apply to HTTP reservations only: on TLS
//! passthrough and raw TCP the broker never sees a request to ask a password of. IP lists work
//! for every kind.

use serde::Serialize;
use warren_store::{Reservation, Rules};

use crate::htpasswd;
use crate::shares::ShareView;
use crate::{Caller, Result, Scope, ServiceError, Tenants};

/// A basic-auth user as shown: never the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BasicUserView {
    /// The user name.
    pub username: String,
    /// `argon2` or `bcrypt`.
    pub scheme: &'static str,
    /// Unix seconds.
    pub created_at: i64,
}

/// The rules of one reservation, as the CLI, SSH commands and API show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RulesView {
    /// The reserved name.
    pub name: String,
    /// `http`, `tls` or `tcp`.
    pub kind: String,
    /// The holder's user name.
    pub owner: String,
    /// Basic-auth users, by name.
    pub basic_users: Vec<BasicUserView>,
    /// Allowed networks: once there is one, only these (and no denied one) may visit.
    pub allow: Vec<String>,
    /// Denied networks.
    pub deny: Vec<String>,
    /// Share links, oldest first.
    pub shares: Vec<ShareView>,
}

impl RulesView {
    /// The rules as the CLI and the SSH command print them, lines within 80 columns.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let fit = crate::fit;
        let mut s = format!(
            "{} ({}, {})\n",
            fit(&self.name, 40),
            self.kind,
            fit(&self.owner, 24)
        );
        if self.basic_users.is_empty() && self.allow.is_empty() && self.deny.is_empty() {
            s.push_str("  open: no password, no IP rules\n");
        }
        for u in &self.basic_users {
            let _ = writeln!(s, "  auth   {} ({})", fit(&u.username, 64), u.scheme);
        }
        for net in &self.allow {
            let _ = writeln!(s, "  allow  {net}");
        }
        for net in &self.deny {
            let _ = writeln!(s, "  deny   {net}");
        }
        for l in &self.shares {
            let _ = writeln!(s, "  share  {}", l.line());
        }
        s
    }

    fn of(rules: Rules, now: i64) -> Self {
        let pick = |action: &str| {
            rules
                .ip_rules
                .iter()
                .filter(|r| r.action == action)
                .map(|r| r.cidr.clone())
                .collect()
        };
        Self {
            allow: pick("allow"),
            deny: pick("deny"),
            basic_users: rules
                .basic_users
                .iter()
                .map(|u| BasicUserView {
                    username: u.username.clone(),
                    scheme: if u.hash.starts_with("$2") {
                        "bcrypt"
                    } else {
                        "argon2"
                    },
                    created_at: u.created_at,
                })
                .collect(),
            shares: rules.shares.iter().map(|s| ShareView::of(s, now)).collect(),
            name: rules.reservation.name,
            kind: rules.reservation.kind,
            owner: rules.reservation.user_name,
        }
    }
}

/// The reservation `name` if the caller may see it (404 otherwise, for another tenant's
/// name too), and may change it when `write`.
pub(crate) async fn reservation_for(
    ctx: &Tenants,
    caller: &Caller,
    name: &str,
    write: bool,
) -> Result<Reservation> {
    let missing = || format!("no reservation named {name:?}");
    let r = ctx
        .store
        .reservation(name)
        .await?
        .ok_or_else(|| ServiceError::NotFound(missing()))?;
    caller.owns(r.user_id, missing)?;
    if write {
        caller.require(Scope::Write)?;
    }
    Ok(r)
}

/// 422 unless `r` serves HTTP: `what` (basic auth, share links) needs requests to look at.
pub(crate) fn http_only(r: &Reservation, what: &str) -> Result<()> {
    let inside = match r.kind.as_str() {
        "http" => return Ok(()),
        "tls" => "TLS passthrough, where the traffic stays encrypted to the owner's service",
        _ => "a raw TCP tunnel, which carries bytes, not requests",
    };
    Err(ServiceError::invalid(
        "name",
        format!(
            "{} is a {} reservation: {what} apply to HTTP routes only, and the broker never \
             sees a request on {inside}; IP allow and deny lists work on every kind",
            r.name, r.kind
        ),
    ))
}

/// The rules of `name`.
pub async fn show(ctx: &Tenants, caller: &Caller, name: &str) -> Result<RulesView> {
    reservation_for(ctx, caller, name, false).await?;
    let rules = ctx.store.rules(name).await?;
    Ok(RulesView::of(rules, warren_store::now()))
}

/// Checks a basic-auth user name: what a browser can send (RFC 7617: no colon, no control
/// characters), of a sensible length.
pub fn check_username(user: &str) -> Result<()> {
    // `.` and `..` would be path segments in the URL that names the user (…/rules/auth/..).
    let ok = !user.is_empty()
        && user != "."
        && user != ".."
        && user.len() <= 64
        && !user.contains(':')
        && !user.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "username",
            format!(
                "{user:?}: use 1-64 characters without ':', spaces or control characters (not . or .. alone)"
            ),
        ))
    }
}

/// Adds basic-auth user `user` with `password` (argon2id), or sets a new password for them.
pub async fn auth_add(
    ctx: &Tenants,
    caller: &Caller,
    name: &str,
    user: &str,
    password: &str,
) -> Result<()> {
    let r = reservation_for(ctx, caller, name, true).await?;
    http_only(&r, "basic auth and share links")?;
    check_username(user)?;
    let password = password.to_owned();
    // ~20 ms of CPU and 19 MiB: off the async threads.
    let hash = tokio::task::spawn_blocking(move || crate::passwords::hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(format!("hashing task: {e}")))??;
    ctx.store
        .put_basic_user(&caller.actor(), name, user, &hash)
        .await?;
    Ok(())
}

/// Removes basic-auth user `user`.
pub async fn auth_rm(ctx: &Tenants, caller: &Caller, name: &str, user: &str) -> Result<()> {
    reservation_for(ctx, caller, name, true).await?;
    ctx.store
        .remove_basic_user(&caller.actor(), name, user)
        .await?;
    Ok(())
}

/// Imports an htpasswd file's users (bcrypt or argon2 lines, as they are), all or none;
/// returns their names. Users already there get the file's hash.
pub async fn auth_import(
    ctx: &Tenants,
    caller: &Caller,
    name: &str,
    text: &str,
) -> Result<Vec<String>> {
    let r = reservation_for(ctx, caller, name, true).await?;
    http_only(&r, "basic auth and share links")?;
    let users = htpasswd::parse(text)?;
    ctx.store
        .put_basic_users(&caller.actor(), name, &users)
        .await?;
    Ok(users.into_iter().map(|(u, _)| u).collect())
}

/// Parses a CIDR (or a bare address, taken as one host) into its canonical form. Host bits
/// set under the prefix are refused rather than silently cleared: `10.1.2.3/8` more likely
/// means a typo than "all of 10/8".
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet> {
    let text = text.trim();
    let net: ipnet::IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip.to_canonical()),
            Err(_) => {
                return Err(ServiceError::invalid(
                    "cidr",
                    format!("{text:?} is not an address or network (10.0.0.0/8, 2001:db8::/32)"),
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(ServiceError::invalid(
            "cidr",
            format!(
                "{text} has bits set past its /{}: did you mean {}?",
                net.prefix_len(),
                net.trunc()
            ),
        ));
    }
    Ok(net)
}

/// Lets `cidr` in; once any network is allowed, only allowed networks are (the most specific
/// entry covering an address decides). Returns the network as stored.
pub async fn allow(ctx: &Tenants, caller: &Caller, name: &str, cidr: &str) -> Result<String> {
    put_ip(ctx, caller, name, "allow", cidr).await
}

/// Keeps `cidr` out. Returns the network as stored.
pub async fn deny(ctx: &Tenants, caller: &Caller, name: &str, cidr: &str) -> Result<String> {
    put_ip(ctx, caller, name, "deny", cidr).await
}

async fn put_ip(
    ctx: &Tenants,
    caller: &Caller,
    name: &str,
    action: &str,
    cidr: &str,
) -> Result<String> {
    reservation_for(ctx, caller, name, true).await?;
    let net = parse_cidr(cidr)?.to_string();
    ctx.store
        .put_ip_rule(&caller.actor(), name, action, &net)
        .await?;
    Ok(net)
}

/// Removes the allow or deny entry of `cidr`.
pub async fn unlist(ctx: &Tenants, caller: &Caller, name: &str, cidr: &str) -> Result<()> {
    reservation_for(ctx, caller, name, true).await?;
    let net = parse_cidr(cidr)?.to_string();
    ctx.store
        .remove_ip_rule(&caller.actor(), name, &net)
        .await?;
    Ok(())
}

/// Removes every basic-auth user and IP entry (share links are revoked one by one); returns
/// how many went.
pub async fn clear(ctx: &Tenants, caller: &Caller, name: &str) -> Result<u64> {
    reservation_for(ctx, caller, name, true).await?;
    Ok(ctx.store.clear_rules(&caller.actor(), name).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_canonical_or_refused() {
        let ok = |s: &str| parse_cidr(s).map(|n| n.to_string()).expect(s);
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(ok("192.0.2.7"), "192.0.2.7/32");
        assert_eq!(ok("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(ok("::1"), "::1/128");
        assert_eq!(ok("::ffff:192.0.2.7"), "192.0.2.7/32");
        let err = parse_cidr("10.1.2.3/8").expect_err("host bits");
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
        for bad in ["", "10.0.0.0/33", "chat", "10.0.0/8", "1.2.3.4/-1"] {
            assert!(
                matches!(
                    parse_cidr(bad),
                    Err(ServiceError::Invalid { field: "cidr", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn usernames_a_browser_can_send() {
        for ok in ["alice", "a.b-c_d", "ünïcode", "x@example.com"] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a:b", "a b", "a\tb", ".", "..", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }
}
