//! The SSH socket ([`SshSocket`]): a deadline for authentication built into its reads, reads
//! ahead of russh (`readahead`), and `TCP_QUICKACK`.
//!
//! russh reads the client's version line and runs the key exchange before our handler is ever
//! asked anything, and a disconnect request cannot reach a session stuck there. Failing the
//! socket's reads once the deadline passes ends such a connection whatever state it is in.
//! After authentication the check is one relaxed atomic load.
//!
//! The same socket also acknowledges what it reads at once (`TCP_QUICKACK`). OpenSSH leaves
//! Nagle on for `ssh -N`, so its second small write waits until the first is acknowledged; a
//! server with nothing to say back delays that ACK by 40 ms. In the key exchange this stalled
//! every connection (client KEXINIT, then ECDH_INIT held for the ACK: 42 ms in a packet capture).
//! In a tunnel the same can hold back a response the client forwards in more than one write,
//! though sequential requests showed no such stall without it (5.1 against 5.4 ms).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use warren_metrics::Counter;

use crate::readahead::{ReadAhead, Source};
use crate::startup::Startup;

/// An accepted SSH connection's socket as russh reads and writes it.
pub(crate) struct SshSocket {
    inner: TcpStream,
    ahead: ReadAhead,
    startup: Arc<Startup>,
    deadline: Pin<Box<Sleep>>,
    /// Counts a connection cut by the deadline, once (`auth_timeout` in the limit metrics).
    timeouts: Option<Counter>,
}

impl SshSocket {
    pub(crate) fn new(
        inner: TcpStream,
        startup: Arc<Startup>,
        within: Duration,
        timeouts: Counter,
    ) -> Self {
        Self {
            inner,
            ahead: ReadAhead::default(),
            startup,
            deadline: Box::pin(tokio::time::sleep(within)),
            timeouts: Some(timeouts),
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let expired =
            !self.startup.is_authenticated() && self.deadline.as_mut().poll(cx).is_ready();
        if expired && let Some(counter) = self.timeouts.take() {
            counter.increment(1);
        }
        expired
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn ack_now(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_tcp_quickack(true);
}

/// Elsewhere there is no such switch; the delay stays.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn ack_now(_: &TcpStream) {}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client did not authenticate in time",
    )
}

impl AsyncRead for SshSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        let this = &mut *self;
        let before = buf.filled().len();
        let read = this.ahead.poll_read(&this.inner, cx, buf);
        if matches!(read, Poll::Ready(Ok(Source::Socket))) && buf.filled().len() > before {
            // Linux re-enters delayed-ACK mode on its own, so this is asked after every read
            // from the socket: it sends the pending ACK now. Best effort: a failure only costs
            // the old delay.
            ack_now(&this.inner);
        }
        read.map_ok(|_| ())
    }
}

impl AsyncWrite for SshSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
