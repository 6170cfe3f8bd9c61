//! What an audit row says was done. The audit log is also how the running broker learns of
//! changes made elsewhere (the CLI, another node): the watcher reacts to some actions. Both
//! sides name them through this one type, so a misspelt action no longer compiles on one side
//! and silently stops DNS or certificate work on the other.

use std::fmt;
use std::str::FromStr;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// An audit action: a dotted verb, stored as its [`AuditAction::as_str`] text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $($(#[$doc])* $variant,)*
        }

        impl AuditAction {
            /// Every action, in declaration order.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)*];

            /// The text stored in the `action` column.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $text,)*
                }
            }
        }

        impl FromStr for AuditAction {
            type Err = UnknownAction;

            fn from_str(s: &str) -> Result<Self, UnknownAction> {
                match s {
                    $($text => Ok(AuditAction::$variant),)*
                    _ => Err(UnknownAction(s.to_owned())),
                }
            }
        }
    };
}

actions! {
    /// A user was created.
    UserAdd = "user.add",
    /// A user was disabled: the broker drops their tunnels and sessions.
    UserDisable = "user.disable",
    /// A user was enabled again.
    UserEnable = "user.enable",
    /// A console password was set or cleared.
    UserPasswd = "user.passwd",
    /// A user's quotas changed.
    UserQuota = "user.quota",
    /// An SSH key was added.
    KeyAdd = "key.add",
    /// An SSH key was removed: the broker drops the sessions that used it.
    KeyRemove = "key.remove",
    /// An unknown key was paired to the approving user (its `key.add` row precedes this one).
    PairingApprove = "pairing.approve",
    /// A pairing was rejected: the waiting key stays unknown and its session is closed.
    PairingReject = "pairing.reject",
    /// A name was reserved.
    NameReserve = "name.reserve",
    /// A name was released.
    NameRelease = "name.release",
    /// A tunnel came up on a name.
    TunnelBind = "tunnel.bind",
    /// A tunnel went down.
    TunnelUnbind = "tunnel.unbind",
    /// A forward was refused (the reason in the detail).
    TunnelRefuse = "tunnel.refuse",
    /// A tunnel was disconnected through the API or CLI.
    TunnelDisconnect = "tunnel.disconnect",
    /// An API token was created.
    TokenCreate = "token.create",
    /// An API token was revoked.
    TokenRevoke = "token.revoke",
    /// Someone signed in to the console.
    SessionLogin = "session.login",
    /// A console session ended.
    SessionLogout = "session.logout",
    /// Every console session of a user ended.
    SessionLogoutAll = "session.logout_all",
    /// The session signing key was rotated.
    SigningKeyRotate = "signing_key.rotate",
    /// A name's access rules changed.
    RulesChange = "rules.change",
    /// A share link was made.
    ShareCreate = "share.create",
    /// A share link was revoked.
    ShareRevoke = "share.revoke",
    /// A share link was opened.
    ShareRedeem = "share.redeem",
    /// An ACME account was stored.
    AcmeAccount = "acme.account",
    /// A certificate was issued and stored.
    CertIssue = "cert.issue",
    /// A certificate was deleted.
    CertDelete = "cert.delete",
    /// DNS records of a name were set.
    DnsSet = "dns.set",
    /// DNS records of a name were removed.
    DnsRemove = "dns.remove",
    /// The DNS provider refused a change.
    DnsError = "dns.error",
    /// A custom domain was attached to a reservation.
    DomainAdd = "domain.add",
    /// A custom domain was removed.
    DomainRemove = "domain.remove",
    /// A custom domain's proof was found.
    DomainVerify = "domain.verify",
    /// A verified custom domain's proof is gone.
    DomainFail = "domain.fail",
    /// A tenant asked for a custom domain to be checked now.
    DomainCheck = "domain.check",
    /// A failing custom domain stopped being served (its grace is over).
    DomainUnroute = "domain.unroute",
    /// A webhook was registered (a tenant's, or a global one).
    WebhookCreate = "webhook.create",
    /// A webhook was deleted.
    WebhookDelete = "webhook.delete",
    /// A webhook delivery was given up after its last attempt (the error in the detail).
    WebhookGiveUp = "webhook.give_up",
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `action` text no [`AuditAction`] has: a row written by a newer broker, say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action {0:?}")]
pub struct UnknownAction(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_and_is_a_dotted_verb() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>(), Ok(*a));
            let (noun, verb) = a.as_str().split_once('.').unwrap_or_default();
            assert!(!noun.is_empty() && !verb.is_empty(), "{a}");
        }
        assert!("tunnel.bnid".parse::<AuditAction>().is_err());
    }
}
