//! What a tenant may do, and doing it.
//!
//! Three front doors lead here: the REST API (`warren-api`), the commands a tenant runs over SSH
//! (`ssh tunnel@host ls`) and the operator's `broker` CLI. Each builds a [`Caller`] (who is
//! asking, with what scope, through which door) and calls the same function on [`Tenants`], so
//! the three cannot disagree on a rule: who may see what, which quota applies, what the audit
//! row says. Functions return [`ServiceError`], whose variants map one to one onto the API's
//! status codes and read as one line in a terminal.
#![warn(missing_docs)]

mod auth;
mod caller;
mod domains;
mod error;
pub mod htpasswd;
mod keys;
mod nodes;
pub mod pairing;
pub mod passwords;
mod reservations;
pub mod rules;
pub mod shares;
pub mod tokens;
mod tunnels;
mod urls;
mod users;
pub use reservations::KINDS;
pub use users::check_user_name;
mod views;
mod webhooks;

pub use auth::{MAX_TOKEN_LIFETIME, parse_duration};
pub use caller::{Caller, Scope, Via};
pub use domains::{DnsRecordView, DomainSettings, DomainView};
pub use error::ServiceError;
pub use nodes::NodeView;
pub use pairing::{PairingView, Pairings};
pub use urls::PublicUrls;
pub use views::*;
pub use webhooks::{DeliveryView, MAX_DELIVERIES, WebhookSettings, WebhookView};

use std::sync::Arc;

use warren_registry::Registry;
use warren_store::{Quotas, Store};

/// Result alias for service functions.
pub type Result<T> = std::result::Result<T, ServiceError>;

/// Defaults and facts the service functions need from the broker's configuration.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// How public URLs are written.
    pub urls: PublicUrls,
    /// Quotas of users who have none of their own set.
    pub default_quotas: DefaultQuotas,
    /// The public TCP port range (`tcp` reservations must fall in it).
    pub tcp_ports: (u16, u16),
    /// Names no tenant may reserve (the console's host label, …).
    pub reserved_labels: Vec<String>,
    /// Where owners connect with ssh.
    pub ssh: SshEndpoint,
    /// Whether the broker publishes tenants' names in DNS itself (a DNS provider is set), so
    /// their records have a state to show.
    pub dns_managed: bool,
}

/// Where owners point ssh, as the console's Connect page and `GET /api/v1/server` write it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SshEndpoint {
    /// Host name or address.
    pub ssh_host: String,
    /// Port.
    pub ssh_port: u16,
    /// The login name owners use (any name works; keys decide who they are).
    pub ssh_user: String,
}

/// The configured quotas every user has unless an admin sets their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DefaultQuotas {
    /// Names a user may hold reserved.
    pub max_reservations: i64,
    /// Live tunnels a user may hold at once.
    pub max_tunnels: i64,
    /// Concurrent visitor connections per tunnel.
    pub max_visitor_connections: i64,
    /// Bytes per second each way per tunnel, shared by its visitors; 0: no limit.
    pub max_tunnel_bytes_per_sec: i64,
}

impl DefaultQuotas {
    /// A user's effective quotas: their own where set, else these.
    pub fn apply(&self, own: &Quotas) -> DefaultQuotas {
        DefaultQuotas {
            max_reservations: own.max_reservations.unwrap_or(self.max_reservations),
            max_tunnels: own.max_tunnels.unwrap_or(self.max_tunnels),
            max_visitor_connections: own
                .max_visitor_connections
                .unwrap_or(self.max_visitor_connections),
            max_tunnel_bytes_per_sec: own
                .max_tunnel_bytes_per_sec
                .unwrap_or(self.max_tunnel_bytes_per_sec),
        }
    }
}

/// The service: the store, the live registry when running inside `broker serve` (the CLI, a
/// separate process, has none: live tunnels are then out of reach), and the settings.
#[derive(Clone)]
pub struct Tenants {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Live routes, when in the serving process.
    pub registry: Option<Arc<Registry>>,
    /// Defaults and public URL shapes.
    pub settings: Arc<TenantSettings>,
    /// Checking custom domains, when set up ([`Tenants::with_domains`]).
    pub domains: Option<Arc<DomainSettings>>,
    /// What webhook URLs may be ([`Tenants::with_webhooks`]).
    pub webhooks: Arc<WebhookSettings>,
    /// Unknown SSH keys waiting for a user to approve them ([`Tenants::with_pairings`]); `None`
    /// when pairing is off, and unknown keys are refused.
    pub pairings: Option<Arc<Pairings>>,
    /// Lets go of a name's cluster-wide hold when its tunnel is disconnected here
    /// ([`Tenants::with_hold_release`]), so other nodes stop sending its visitors here.
    pub hold_release: Option<HoldRelease>,
}

/// Releases `name`'s cluster-wide hold if `session` of this node still holds it (the broker
/// gives `warren_cluster::Membership::release`; it runs on a task of its own).
pub type HoldRelease = Arc<dyn Fn(&str, warren_registry::SessionId) + Send + Sync>;

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tenants {
    /// A service over `store`, with live tunnels when `registry` is given.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Option<Arc<Registry>>,
        settings: TenantSettings,
    ) -> Self {
        Self {
            store,
            registry,
            settings: Arc::new(settings),
            domains: None,
            webhooks: Arc::new(WebhookSettings::default()),
            pairings: None,
            hold_release: None,
        }
    }

    /// Disconnecting a tunnel here also lets go of its hold in the cluster through `release`.
    pub fn with_hold_release(mut self, release: HoldRelease) -> Self {
        self.hold_release = Some(release);
        self
    }

    /// Turns device pairing on: the SSH side issues codes into `pairings`, the API decides them.
    pub fn with_pairings(mut self, pairings: Arc<Pairings>) -> Self {
        self.pairings = Some(pairings);
        self
    }

    fn registry(&self) -> Result<&Arc<Registry>> {
        self.registry.as_ref().ok_or_else(|| ServiceError::Invalid {
            field: "tunnels",
            message: "live tunnels are known only to the running broker; use the API on its \
                          admin address"
                .into(),
        })
    }
}
