use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::{SendError, TrySendError};

use super::WindowSizeRef;
use crate::{ChannelId, ChannelMsg};

/// Data packets shorter than this are appended to one buffer while they wait in a backlog, so
/// that a peer sending tiny packets costs bytes, not a message each.
const MERGE_BELOW: usize = 4096;
/// A merged buffer is closed at one channel packet's worth.
const MERGE_UP_TO: usize = 32768;

/// The session's side of flow control: which channels' readers asked for it, and the wake-up.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub(crate) notify: Notify,
    ready: Mutex<Vec<ChannelId>>,
}

impl Drained {
    fn ready(&self, id: ChannelId) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if !ready.contains(&id) {
            ready.push(id);
        }
        drop(ready);
        self.notify.notify_one();
    }

    /// The channels to look at now: only those, so that a session with many channels does not
    /// walk them all per wake-up (that was 18% of the broker's CPU in a download).
    pub(crate) fn take_ready(&self) -> Vec<ChannelId> {
        std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Flow control shared by a channel's read half and the session (Warren's patch).
///
/// The session grants the peer new window only for data the reader has taken off the channel's
/// queue, instead of on receipt. A reader that stops reading then stops its own peer, through
/// that channel's window, and the session loop never waits on its queue: other channels of
/// the same session keep flowing.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Only channels whose reader reports what it takes are gated (see [`ChannelRef::new`]).
    gated: bool,
    /// Bytes taken by the reader since the session last granted them back.
    consumed: AtomicU32,
    /// The session holds messages this channel's queue had no room for.
    backlogged: AtomicBool,
    /// The session's wake-up, the amount worth a `WINDOW_ADJUST` and this channel's id, set on
    /// first delivery.
    session: OnceLock<(Arc<Drained>, u32, ChannelId)>,
}

impl Flow {
    pub(crate) fn gated() -> Arc<Self> {
        Arc::new(Self {
            gated: true,
            ..Self::default()
        })
    }

    /// Called by the reader for every message it takes off the queue, with what the queue
    /// still holds and can hold.
    pub(crate) fn took(&self, msg: &ChannelMsg, queued: usize, capacity: usize) {
        let Some((wake, grant_at, id)) = self.session.get() else {
            return;
        };
        let n = match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len() as u32,
            _ => 0,
        };
        let before = self.consumed.fetch_add(n, Ordering::AcqRel);
        // Pairs with the fence in `ChannelRef::deliver`: either we see its backlog, or it sees
        // the room this take made.
        fence(Ordering::SeqCst);
        // A backlog is moved on once the queue has half its room free, not one message at a
        // time: a wake-up per packet cost the broker a quarter more CPU in a download.
        if (self.backlogged.load(Ordering::SeqCst) && queued * 2 <= capacity)
            || (before < *grant_at && before.saturating_add(n) >= *grant_at)
        {
            wake.ready(*id);
        }
    }

    /// What the session may grant back now: everything consumed once it is worth a message.
    pub(crate) fn take_grant(&self) -> u32 {
        let Some((_, grant_at, _)) = self.session.get() else {
            return 0;
        };
        let mut current = self.consumed.load(Ordering::Acquire);
        while current >= *grant_at {
            match self.consumed.compare_exchange_weak(
                current,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return current,
                Err(now) => current = now,
            }
        }
        0
    }
}

/// A backlog entry: a message, or small data packets appended together.
#[derive(Debug)]
enum Held {
    Msg(ChannelMsg),
    Merged(BytesMut),
}

impl Held {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Held::Msg(msg) => msg,
            Held::Merged(data) => ChannelMsg::Data {
                data: data.freeze(),
            },
        }
    }
}

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    pub(crate) flow: Arc<Flow>,
    /// Messages waiting for room in the channel's queue, in order.
    backlog: Mutex<VecDeque<Held>>,
}

impl ChannelRef {
    /// A channel fed by `sender`. Its receiver does not report what it takes, so the session
    /// re-opens its window on receipt, as upstream russh does.
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self::with_flow(sender, WindowSizeRef::new(0), Arc::new(Flow::default()))
    }

    /// A channel whose read half (made with the returned flow) reports what it takes, so the
    /// session grants its window on consumption.
    pub(crate) fn gated(sender: Sender<ChannelMsg>) -> (Self, Arc<Flow>) {
        let flow = Flow::gated();
        (
            Self::with_flow(sender, WindowSizeRef::new(0), flow.clone()),
            flow,
        )
    }

    pub(super) fn with_flow(
        sender: Sender<ChannelMsg>,
        window_size: WindowSizeRef,
        flow: Arc<Flow>,
    ) -> Self {
        Self {
            sender,
            window_size,
            flow,
            backlog: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Whether the session grants this channel's window on consumption.
    pub(crate) fn is_gated(&self) -> bool {
        self.flow.gated
    }

    /// Hands `msg` to the channel without ever waiting: what finds the queue full waits in
    /// the backlog, behind which every later message queues, so order is kept. Bounded by
    /// the channel's window for a peer that respects it.
    pub(crate) fn deliver(
        &self,
        msg: ChannelMsg,
        wake: &Arc<Drained>,
        grant_at: u32,
        id: ChannelId,
    ) {
        if self.flow.session.get().is_none() {
            let _ = self.flow.session.set((wake.clone(), grant_at.max(1), id));
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let msg = if backlog.is_empty() {
            match self.sender.try_send(msg) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(msg)) => msg,
            }
        } else {
            msg
        };
        match msg {
            ChannelMsg::Data { data } if data.len() < MERGE_BELOW => match backlog.back_mut() {
                Some(Held::Merged(tail)) if tail.len() + data.len() <= MERGE_UP_TO => {
                    tail.extend_from_slice(&data);
                }
                _ => {
                    let mut tail = BytesMut::with_capacity(MERGE_UP_TO);
                    tail.extend_from_slice(&data);
                    backlog.push_back(Held::Merged(tail));
                }
            },
            msg => backlog.push_back(Held::Msg(msg)),
        }
        self.flow.backlogged.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        drop(backlog);
        // The reader may have made room before it could see the flag.
        self.flush_backlog();
    }

    /// Sends `msg` behind whatever waits in the backlog. Until the session has delivered data
    /// to this channel (and always on the client side) this is the plain, waiting send.
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        if let Some((wake, grant_at, id)) = self.flow.session.get() {
            self.deliver(msg, wake, *grant_at, *id);
            return Ok(());
        }
        self.sender.send(msg).await
    }

    /// Moves what the queue now has room for out of the backlog.
    pub(crate) fn flush_backlog(&self) {
        if !self.flow.backlogged.load(Ordering::SeqCst) {
            return;
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(held) = backlog.pop_front() {
            match self.sender.try_send(held.into_msg()) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => {
                    backlog.clear();
                    break;
                }
                Err(TrySendError::Full(msg)) => {
                    backlog.push_front(Held::Msg(msg));
                    break;
                }
            }
        }
        if backlog.is_empty() {
            self.flow.backlogged.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for ChannelRef {
    /// A channel removed (closed by the peer) with messages still in its backlog: they are
    /// delivered by a task of their own, which may wait on the reader without holding up the
    /// session.
    fn drop(&mut self) {
        let backlog = std::mem::take(self.backlog.get_mut().unwrap_or_else(|e| e.into_inner()));
        if backlog.is_empty() {
            return;
        }
        let sender = self.sender.clone();
        #[cfg(not(target_arch = "wasm32"))]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for held in backlog {
                    if sender.send(held.into_msg()).await.is_err() {
                        break;
                    }
                }
            });
        }
        #[cfg(target_arch = "wasm32")]
        for held in backlog {
            let _ = sender.try_send(held.into_msg());
        }
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
