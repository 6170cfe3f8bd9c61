//! The forwards one SSH connection holds, each owning exactly one route.
//!
//! A forward is keyed by what the client will name it by (`cancel-tcpip-forward` sends the bind
//! address and the port we replied with), and each route name appears at most once: a second
//! `-R 80:…` with the same address and port, or `-R chat:80` next to `-R chat.DOMAIN:80`, is
//! refused before anything is bound. Without that, the second forward replaced the first in a
//! plain map, and the first route stayed bound after the session ended, answering 502 forever.

use std::collections::HashMap;

use warren_registry::{RouteKind, StickyKey};

/// One granted forward.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    /// The route's name in the registry (`chat`, `brave-otter-42`, `tcp:20001`).
    pub(crate) name: String,
    pub(crate) kind: RouteKind,
    /// Set for random names and TCP ports: what lets a reconnect get the same one back.
    pub(crate) sticky: Option<StickyKey>,
}

/// Why a forward cannot be added to this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Clash {
    /// The same bind address and port is forwarded already.
    Request,
    /// The same route name is forwarded already, under another spelling.
    Name,
}

/// The session's forwards by `(bind address, port)`.
#[derive(Debug, Default)]
pub(crate) struct Forwards {
    by_request: HashMap<(String, u32), Forward>,
}

impl Forwards {
    pub(crate) fn len(&self) -> usize {
        self.by_request.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_request.is_empty()
    }

    /// Whether a forward for `(address, port)` may be added (`port` 0 is never a clash: the
    /// broker picks the reply port).
    pub(crate) fn check_request(&self, address: &str, port: u32) -> Result<(), Clash> {
        if port != 0 && self.by_request.contains_key(&(address.to_owned(), port)) {
            return Err(Clash::Request);
        }
        Ok(())
    }

    /// Whether this session forwards `name` already.
    pub(crate) fn holds_name(&self, name: &str) -> bool {
        self.by_request.values().any(|f| f.name == name)
    }

    /// Adds a forward; refuses (and changes nothing) on a clash, so a route is never orphaned.
    pub(crate) fn insert(&mut self, address: &str, port: u32, fwd: Forward) -> Result<(), Clash> {
        self.check_request(address, port)?;
        if self.holds_name(&fwd.name) {
            return Err(Clash::Name);
        }
        self.by_request.insert((address.to_owned(), port), fwd);
        Ok(())
    }

    pub(crate) fn remove(&mut self, address: &str, port: u32) -> Option<Forward> {
        self.by_request.remove(&(address.to_owned(), port))
    }

    /// Every forward, leaving the set empty (the session ended).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Forward> + '_ {
        self.by_request.drain().map(|(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(name: &str) -> Forward {
        Forward {
            name: name.into(),
            kind: RouteKind::Http,
            sticky: None,
        }
    }

    #[test]
    fn one_route_per_forward() {
        let mut f = Forwards::default();
        f.insert("localhost", 80, fwd("brave-otter-1"))
            .expect("first");
        // The same request again: refused, the first one kept.
        assert_eq!(
            f.insert("localhost", 80, fwd("lively-badger-2")),
            Err(Clash::Request)
        );
        // The same name under another spelling.
        f.insert("chat", 80, fwd("chat")).expect("chat");
        assert_eq!(
            f.insert("chat.example.com", 80, fwd("chat")),
            Err(Clash::Name)
        );
        assert_eq!(f.len(), 2);
        assert!(f.check_request("localhost", 0).is_ok());
        assert_eq!(
            f.remove("localhost", 80).map(|f| f.name),
            Some("brave-otter-1".into())
        );
        assert!(!f.holds_name("brave-otter-1"));
        let names: Vec<String> = f.drain().map(|f| f.name).collect();
        assert_eq!(names, ["chat"]);
        assert!(f.is_empty());
    }
}
