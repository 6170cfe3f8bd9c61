//! Byte counting between visitors and origins, for a tunnel's live counters
//! (`Route::count_bytes`) and its request log: request bodies on their way to the origin,
//! response bodies on their way back, and raw streams (TCP, TLS passthrough, upgraded
//! connections). Each counts as the bytes move, so a long download shows while it runs.
//!
//! The cost is an add on the tunnel's own counters per body frame or socket read/write;
//! a tunnel's visitors are served on its one tunnel thread, so those cache lines stay put.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warren_registry::Route;

use crate::record::Pending;

/// A visitor's request body on its way to the origin, counted.
pub(crate) struct RequestBody {
    inner: Incoming,
    route: Arc<Route>,
    /// The request's own count, for its log entry (when the tunnel keeps one).
    tally: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, route: Arc<Route>, tally: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            route,
            tally,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            this.route.count_bytes(n, 0);
            if let Some(tally) = &this.tally {
                tally.fetch_add(n, Ordering::Relaxed);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body on its way to the visitor, counted; its request's log entry (with the
/// status sent) is written when it is dropped, which hyper does once the body has ended or the
/// visitor has gone.
pub(crate) struct Metered<B: Body> {
    inner: B,
    route: Arc<Route>,
    sent: u64,
    ended: bool,
    entry: Option<(Pending, u16)>,
}

impl<B: Body> Metered<B> {
    pub(crate) fn new(inner: B, route: Arc<Route>, entry: Option<(Pending, u16)>) -> Self {
        Self {
            inner,
            route,
            sent: 0,
            ended: false,
            entry,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Metered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.sent += n;
                    this.route.count_bytes(0, n);
                }
            }
            None => this.ended = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Metered<B> {
    fn drop(&mut self) {
        if let Some((pending, status)) = self.entry.take() {
            // hyper stops polling once `is_end_stream` says so (and never polls a HEAD
            // response's body): that is an end too.
            let complete = self.ended || self.inner.is_end_stream();
            pending.record(status, self.sent, complete);
        }
    }
}

/// A visitor's stream (TCP, TLS passthrough, an upgraded connection), counted: reads are
/// bytes in, writes bytes out.
pub(crate) struct MeteredIo<'a, T> {
    inner: T,
    route: &'a Route,
    /// Bytes read from the visitor so far.
    pub(crate) read: u64,
    /// Bytes written to the visitor so far.
    pub(crate) written: u64,
}

impl<'a, T> MeteredIo<'a, T> {
    pub(crate) fn new(inner: T, route: &'a Route) -> Self {
        Self {
            inner,
            route,
            read: 0,
            written: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MeteredIo<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        this.read += n;
        this.route.count_bytes(n, 0);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MeteredIo<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T> MeteredIo<'_, T> {
    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
        self.route.count_bytes(0, n as u64);
    }
}
