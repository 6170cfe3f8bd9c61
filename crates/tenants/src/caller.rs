//! Who is asking: the user, the scope their credential carries, and the door they came through.

use std::fmt;

use warren_store::User;

use crate::ServiceError;

/// What a credential may do. Ordered: `Admin` includes `Write`, which includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Look, change nothing.
    Read,
    /// Change one's own objects.
    Write,
    /// Change anyone's objects; only an admin user's credential can carry it.
    Admin,
}

impl Scope {
    /// The word used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = ServiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            _ => Err(ServiceError::invalid(
                "scope",
                format!("{s:?} is not a scope: use read, write or admin"),
            )),
        }
    }
}

/// The door a request came through; it names the actor in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The operator's `broker` CLI on the server.
    Cli,
    /// A command over SSH, authenticated by the user's key.
    Ssh,
    /// The web console (a login session).
    Console,
    /// An API token, by its name.
    Token(String),
}

/// Who is asking. Built by each front door after authentication; service functions decide from
/// it alone what the request may touch.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated user. The operator's CLI acts as [`Caller::operator`], a synthetic admin.
    pub user: User,
    /// What the credential allows (capped at `Write` for users who are not admins).
    pub scope: Scope,
    /// Through which door.
    pub via: Via,
}

impl Caller {
    /// A caller for `user` through `via`, with `scope` capped at `Write` unless the user is an
    /// admin: a token cannot carry more than its user has.
    pub fn new(user: User, scope: Scope, via: Via) -> Self {
        let scope = if user.is_admin {
            scope
        } else {
            scope.min(Scope::Write)
        };
        Self { user, scope, via }
    }

    /// The operator at the server's shell: may do anything, audited as `cli`.
    pub fn operator() -> Self {
        Self {
            user: User {
                id: 0,
                name: "cli".into(),
                is_admin: true,
                disabled: false,
                created_at: 0,
            },
            scope: Scope::Admin,
            via: Via::Cli,
        }
    }

    /// The actor written to the audit log: `cli`, `ssh:alice`, `alice/console`,
    /// `alice/token:deploy`.
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Cli => "cli".into(),
            Via::Ssh => format!("ssh:{}", self.user.name),
            Via::Console => format!("{}/console", self.user.name),
            Via::Token(name) => format!("{}/token:{name}", self.user.name),
        }
    }

    /// Whether this caller acts with admin powers (an admin user through an admin-scoped door).
    pub fn is_admin(&self) -> bool {
        self.user.is_admin && self.scope == Scope::Admin
    }

    /// Fails with 403 unless the credential carries `scope`.
    pub fn require(&self, scope: Scope) -> crate::Result<()> {
        if self.scope >= scope && (scope != Scope::Admin || self.user.is_admin) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "this needs the {scope} scope; the credential has {}",
                self.scope
            )))
        }
    }

    /// Whether the caller may see objects of `owner`: their own, or anyone's for an admin.
    pub fn sees(&self, owner: i64) -> bool {
        self.user.id == owner || self.is_admin()
    }

    /// `Ok` when the caller may see objects of `owner`, else the 404 `not_found` says (never
    /// 403: another tenant's objects do not exist for the caller).
    pub fn owns(&self, owner: i64, not_found: impl FnOnce() -> String) -> crate::Result<()> {
        if self.sees(owner) {
            Ok(())
        } else {
            Err(ServiceError::NotFound(not_found()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, admin: bool) -> User {
        User {
            id,
            name: format!("u{id}"),
            is_admin: admin,
            disabled: false,
            created_at: 0,
        }
    }

    #[test]
    fn a_token_cannot_carry_more_than_its_user() {
        let c = Caller::new(user(1, false), Scope::Admin, Via::Console);
        assert_eq!(c.scope, Scope::Write);
        assert!(c.require(Scope::Admin).is_err());
        assert!(!c.is_admin());
        let a = Caller::new(user(2, true), Scope::Admin, Via::Console);
        assert!(a.require(Scope::Admin).is_ok());
        assert!(a.sees(1));
    }

    #[test]
    fn other_tenants_objects_are_not_found() {
        let c = Caller::new(user(1, false), Scope::Write, Via::Token("ci".into()));
        assert!(c.owns(1, || "x".into()).is_ok());
        assert!(matches!(
            c.owns(2, || "no reservation named chat".into()),
            Err(ServiceError::NotFound(m)) if m == "no reservation named chat"
        ));
        let read = Caller::new(user(1, true), Scope::Read, Via::Token("r".into()));
        assert!(!read.sees(2), "an admin's read token is not an admin credential");
        assert_eq!(read.actor(), "u1/token:r");
    }
}
