//! One Postgres connection listening on every channel a node hears, fanned out to its readers.
//!
//! A node hears two channels (`warren_holds`, `warren_challenges`). A `PgListener` each cost
//! a connection each, outside the pool, on every node: with ten nodes, ten connections of
//! Postgres's default hundred for the second channel alone, which is notified a few times a
//! month (certificate challenges). One listener on both, started at the first subscription,
//! passes each notification to that channel's readers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Mutex, broadcast};

use crate::Result;
use crate::nodes::HoldEvents;

/// Every channel a node listens on: one `LISTEN` each on the one connection.
pub(crate) const CHANNELS: &[&str] = &[
    crate::nodes::HOLDS_CHANNEL,
    crate::nodes::CHALLENGES_CHANNEL,
];

/// Notifications a slow reader may fall behind by before it is told it missed some (it then
/// reads everything again, as after a lost connection).
const BACKLOG: usize = 4096;

/// Each channel's fan-out: `Some(payload)` per notification, `None` for "may have missed some".
type Channels = Arc<HashMap<&'static str, broadcast::Sender<Option<String>>>>;

/// The shared listener of one store, started at the first subscription.
#[derive(Default)]
pub(crate) struct Notices {
    channels: Mutex<Option<Channels>>,
}

impl Notices {
    /// A reader of `channel`, which hears every notification from the moment this returns:
    /// the `LISTEN`s are in place before the first reader gets its receiver.
    pub(crate) async fn subscribe(
        &self,
        pool: &PgPool,
        channel: &str,
    ) -> Result<Box<dyn HoldEvents>> {
        let mut started = self.channels.lock().await;
        let channels = match &*started {
            Some(channels) => channels.clone(),
            None => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen_all(CHANNELS.iter().copied()).await?;
                let channels: Channels = Arc::new(
                    CHANNELS
                        .iter()
                        .map(|c| (*c, broadcast::channel(BACKLOG).0))
                        .collect(),
                );
                tokio::spawn(pump(listener, channels.clone()));
                *started = Some(channels.clone());
                channels
            }
        };
        let Some(tx) = channels.get(channel) else {
            return Err(crate::StoreError::Notifications(format!(
                "no listener for channel {channel}"
            )));
        };
        Ok(Box::new(Reader(tx.subscribe())))
    }
}

/// Passes each notification to its channel's readers. A lost connection (sqlx reconnects and
/// listens again at the next call) tells every reader that it may have missed some, once a
/// second while the database is away.
async fn pump(mut listener: PgListener, channels: Channels) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if let Some(tx) = channels.get(n.channel()) {
                    let _ = tx.send(Some(n.payload().to_owned()));
                }
            }
            Ok(None) => {
                for tx in channels.values() {
                    let _ = tx.send(None);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "database notifications: cannot reconnect yet");
                for tx in channels.values() {
                    let _ = tx.send(None);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

struct Reader(broadcast::Receiver<Option<String>>);

#[async_trait::async_trait]
impl HoldEvents for Reader {
    async fn next(&mut self) -> Result<Option<String>> {
        match self.0.recv().await {
            Ok(event) => Ok(event),
            // Fell behind: what was skipped is read again by the caller.
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(None),
            Err(broadcast::error::RecvError::Closed) => Err(crate::StoreError::Notifications(
                "the database's notifications ended".into(),
            )),
        }
    }
}
