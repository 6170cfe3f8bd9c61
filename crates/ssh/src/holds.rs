//! A name's hold across the nodes on one database (`warren-cluster`): claimed before the
//! name is bound here, given back when the bind fails. Released with the forward
//! ([`Tunnels::release`]).

use tracing::warn;
use warren_cluster::{ClaimError, Claiming, sticky_id};
use warren_registry::{Lookup, RouteKind, StickyKey};
use warren_store::User;

use crate::grant::Refusal;
use crate::tunnels::Tunnels;

impl Tunnels {
    /// Claims `name` for this session across the nodes on the database, before it is bound
    /// here: refused, with the words one node would use, while another user's session on
    /// another live node holds it.
    pub(crate) async fn claim_hold(
        &self,
        user: &User,
        name: &str,
        kind: RouteKind,
        sticky: Option<&StickyKey>,
    ) -> Result<(), Refusal> {
        let Some(cluster) = &self.server.cluster else {
            return Ok(());
        };
        let sticky = sticky.map(sticky_id);
        let claim = Claiming {
            session: self.id,
            user_id: user.id,
            kind,
            sticky: sticky.as_deref(),
        };
        match cluster.claim(name, &claim).await {
            // The same owner's session on another node is no obstacle: the claim takes the
            // name over, and that node gives it up when it reads the change.
            Ok(()) => Ok(()),
            Err(ClaimError::Held { .. }) => Err(Refusal::new(format!(
                "name {name:?} is in use by another user"
            ))),
            Err(ClaimError::Store(e)) => {
                warn!(%name, error = %e, "cluster claim failed");
                Err(Refusal::database())
            }
        }
    }

    /// After a failed bind: the name's hold goes back to whichever session of this node
    /// serves it (a claim on this node takes the row from a sibling session, and the registry
    /// may then have refused), or is released when none does.
    pub(crate) async fn settle_hold(&self, name: &str) {
        let Some(cluster) = &self.server.cluster else {
            return;
        };
        match self.server.registry.lookup_local(name) {
            Lookup::Live(r) if r.session != self.id => {
                let claim = Claiming {
                    session: r.session,
                    user_id: r.owner,
                    kind: r.kind,
                    sticky: None,
                };
                if let Err(e) = cluster.claim(name, &claim).await {
                    warn!(%name, error = %e, "cannot give a name's hold back to its session");
                }
            }
            _ => cluster.release(name, self.id).await,
        }
    }
}
