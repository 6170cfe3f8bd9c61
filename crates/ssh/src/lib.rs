//! The SSH side of Warren: plain OpenSSH clients connect here.
//!
//! A client authenticates with a public key registered in the [store](warren_store); the key
//! decides the tenant, the username is ignored. Each `tcpip-forward` request (`ssh -R`) becomes a
//! name bound in the [registry](warren_registry): `-R 0:localhost:P` a random readable name,
//! `-R NAME:80:localhost:P` a reserved (or auto-claimed) one. When a visitor arrives, the edge
//! asks the registry, which asks our [`endpoint`] to open a `forwarded-tcpip` channel back to the
//! client. The session channel, if the client opens one, shows the URLs and one line per visitor
//! request, like sish and localhost.run do.
#![warn(missing_docs)]

mod access;
mod ask;
mod commands;
mod console;
mod endpoint;
mod forwards;
mod grant;
mod handler;
mod holds;
mod keys;
mod limits;
mod pairing;
mod penalty;
mod readahead;
mod server;
mod sessions;
mod socket;
mod startup;
mod stream;
mod tunnels;

pub use keys::{KeyError, host_key_fingerprint, load_or_create_host_key, parse_public_key};
pub use limits::SessionLimits;
pub use server::{SshServer, SshSettings, run};
pub use sessions::Sessions;
