//! The visitor socket, shared so the edge can still answer after hyper gives up on it.
//!
//! hyper closes a connection whose request head did not arrive in time without a response; we
//! want a 408 there, so hyper gets the socket and we keep a handle to its write half.
//!
//! Reads go through tokio's own read half, which reads into hyper's buffer without zero-filling
//! it first: with uploads read in large pieces, filling each read buffer with zeros would cost
//! as much as the copy out of the kernel.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncWrite, AsyncWriteExt, Join};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A visitor's TCP stream as hyper reads and writes it.
pub(crate) type VisitorIo = Join<OwnedReadHalf, VisitorWriter>;

/// A handle to the visitor's side for writing, which outlives hyper's use of the stream.
#[derive(Clone)]
pub(crate) struct VisitorWriter {
    inner: Arc<OwnedWriteHalf>,
}

/// The stream for hyper, and a handle for a last response once hyper is done with it.
pub(crate) fn visitor_io(stream: TcpStream) -> (VisitorIo, VisitorWriter) {
    let (read, write) = stream.into_split();
    let writer = VisitorWriter {
        inner: Arc::new(write),
    };
    (tokio::io::join(read, writer.clone()), writer)
}

impl VisitorWriter {
    /// Writes a last response (best effort) and closes our side.
    pub(crate) async fn write_final(mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.write_all(bytes).await;
            let _ = self.shutdown().await;
        })
        .await;
    }

    fn stream(&self) -> &TcpStream {
        (*self.inner).as_ref()
    }
}

/// Writes through the shared write half: tokio's `try_write` takes `&self`, so the handle kept
/// for a last response and hyper's can both write, one after the other.
impl AsyncWrite for VisitorWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream().poll_write_ready(cx))?;
            match self.stream().try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream().poll_write_ready(cx))?;
            match self.stream().try_write_vectored(bufs) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sock = socket2::SockRef::from(self.stream());
        match sock.shutdown(std::net::Shutdown::Write) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
