//! Custom domains as aliases of reserved names: `app.their-domain.org` → `chat`.
//!
//! The edge maps a visitor's Host or SNI to a name; a host outside the broker's domain is
//! looked up here, and from then on is the name it aliases (same route, same access rules,
//! same request log). The map is replaced whole by the broker's domain task whenever the set
//! of served domains changes, and read lock-free (`arc-swap`) per visitor connection like
//! the routes.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Registry;

/// The alias map: lowercase host name → reserved name.
#[derive(Default)]
pub(crate) struct Aliases(ArcSwap<HashMap<String, String>>);

impl Registry {
    /// The name the custom domain `host` (lowercase, no port, no trailing dot) is served as,
    /// if it is. Lock-free.
    pub fn alias(&self, host: &str) -> Option<String> {
        self.aliases.0.load().get(host).cloned()
    }

    /// Replaces every alias (host → name) at once; a host left out stops being served at its
    /// visitors' next connection or request.
    pub fn set_aliases(&self, aliases: HashMap<String, String>) {
        self.aliases.0.store(Arc::new(aliases));
    }

    /// The aliases in force.
    pub fn aliases(&self) -> HashMap<String, String> {
        HashMap::clone(&self.aliases.0.load())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn aliases_are_replaced_whole() {
        let r = Registry::new(Duration::from_secs(1), 1);
        assert_eq!(r.alias("app.their.org"), None);
        r.set_aliases(HashMap::from([(
            "app.their.org".to_owned(),
            "chat".to_owned(),
        )]));
        assert_eq!(r.alias("app.their.org").as_deref(), Some("chat"));
        r.set_aliases(HashMap::new());
        assert_eq!(r.alias("app.their.org"), None);
    }
}
