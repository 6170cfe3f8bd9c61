//! A bound forward as the registry sees it: opens `forwarded-tcpip` channels back to the client.

use std::net::SocketAddr;
use std::time::Duration;

use russh::server::Handle;
use russh::{ChannelOpenFailure, Error as SshError};
use warren_registry::{BoxStream, Endpoint, OpenError};

use crate::console::Console;
use crate::stream::Gathered;

/// How long a client may take to accept a channel before the visitor gets a 502.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SshEndpoint {
    pub(crate) handle: Handle,
    /// Echoed exactly as the client sent them (with the allocated port for `-R 0:`): OpenSSH
    /// matches incoming channels to its forwards by this pair.
    pub(crate) address: String,
    pub(crate) port: u32,
    pub(crate) console: Console,
    /// The tunnel thread the session runs on (set where the endpoint is made: in the session).
    pub(crate) shard: Option<usize>,
}

#[async_trait::async_trait]
impl Endpoint for SshEndpoint {
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        let open = self.handle.channel_open_forwarded_tcpip(
            self.address.clone(),
            self.port,
            visitor.ip().to_string(),
            u32::from(visitor.port()),
        );
        match tokio::time::timeout(OPEN_TIMEOUT, open).await {
            Ok(Ok(channel)) => Ok(Box::pin(Gathered::new(channel.into_stream()))),
            Ok(Err(SshError::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed))) => Err(
                OpenError::Refused(format!("nothing answered behind {}", self.describe())),
            ),
            Ok(Err(e)) => Err(OpenError::Unreachable(e.to_string())),
            Err(_) => Err(OpenError::Unreachable(
                "the SSH client did not answer in time".into(),
            )),
        }
    }

    fn notify(&self, line: String) {
        self.console.line(line);
    }

    fn shard(&self) -> Option<usize> {
        self.shard
    }

    fn describe(&self) -> String {
        format!(
            "{}:{}",
            if self.address.is_empty() {
                "*"
            } else {
                &self.address
            },
            self.port
        )
    }
}
