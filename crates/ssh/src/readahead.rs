//! Reads from the SSH socket that take what the kernel has, not just what russh asked for.
//!
//! russh reads each packet with two exact reads on an unbuffered stream: the first cipher block
//! (to learn the length), then the rest. In a download that is two `recvmsg` calls per 32 KiB
//! packet, and every small read that frees receive space makes the kernel send the client a
//! window update. OpenSSH's sshd reads up to 256 KiB at a time. Here one `readv` fills russh's
//! buffer first and puts what follows (the next packets) in a buffer of our own, which the next
//! reads are served from.
//!
//! The buffer exists only while data flows: it is freed when the socket has nothing to read,
//! the buffer is empty and the last socket read was small (a keepalive, the handshake), so an
//! idle tunnel holds none of it. After a large read it is kept: in a download the socket runs
//! dry between packets, and re-allocating (and zero-filling) it each time was 1.4% of the
//! broker's CPU. A tunnel that just finished a transfer lets it go at its next small read.

use std::io::{self, IoSliceMut};
use std::task::{Context, Poll};

use tokio::io::ReadBuf;
use tokio::net::TcpStream;

/// How much is read beyond russh's request in one call: a few full channel packets.
const AHEAD: usize = 64 * 1024;
/// A socket read below this is not a transfer in progress.
const SMALL: usize = 4096;

#[derive(Default)]
pub(crate) struct ReadAhead {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// What the last socket read returned.
    last: usize,
}

/// What a read did: whether it went to the socket (and got data) or was served from the buffer.
pub(crate) enum Source {
    Buffer,
    Socket,
}

impl ReadAhead {
    pub(crate) fn poll_read(
        &mut self,
        io: &TcpStream,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<Source>> {
        if self.start < self.end {
            let n = out.remaining().min(self.end - self.start);
            out.put_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Poll::Ready(Ok(Source::Buffer));
        }
        loop {
            if io.poll_read_ready(cx).is_pending() {
                if self.last < SMALL {
                    // Nothing in flight: an idle session keeps no buffer.
                    self.buf = Vec::new();
                }
                return Poll::Pending;
            }
            if self.buf.is_empty() {
                self.buf = vec![0; AHEAD];
            }
            let wanted = out.remaining();
            let first = out.initialize_unfilled();
            let mut slices = [IoSliceMut::new(first), IoSliceMut::new(&mut self.buf)];
            match io.try_read_vectored(&mut slices) {
                Ok(n) => {
                    let mine = n.min(wanted);
                    out.advance(mine);
                    self.start = 0;
                    self.end = n - mine;
                    self.last = n;
                    return Poll::Ready(Ok(Source::Socket));
                }
                // Readiness was stale; `try_read_vectored` cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let addr = listener.local_addr().expect("loopback");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("loopback"), server.expect("loopback").0)
    }

    async fn read(ahead: &mut ReadAhead, io: &TcpStream, len: usize) -> (Vec<u8>, bool) {
        let mut out = vec![0; len];
        let mut buf = ReadBuf::new(&mut out);
        let source = poll_fn(|cx| ahead.poll_read(io, cx, &mut buf))
            .await
            .expect("loopback");
        let n = buf.filled().len();
        out.truncate(n);
        (out, matches!(source, Source::Socket))
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_socket_read_in_order() {
        let (mut client, server) = pair().await;
        let sent: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        client.write_all(&sent).await.expect("loopback");
        client.shutdown().await.expect("loopback");
        let mut ahead = ReadAhead::default();
        let mut got = Vec::new();
        let mut socket_reads = 0;
        loop {
            let (chunk, from_socket) = read(&mut ahead, &server, 16).await;
            socket_reads += usize::from(from_socket);
            if chunk.is_empty() {
                break;
            }
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, sent);
        // 10,000 bytes in 16-byte reads: one or a few socket reads (what the kernel had at
        // each moment) and the end of stream, not 625.
        assert!(socket_reads <= 4, "{socket_reads} socket reads");
    }

    #[tokio::test]
    async fn an_idle_socket_holds_no_buffer() {
        let (mut client, server) = pair().await;
        client.write_all(b"hello, world").await.expect("loopback");
        let mut ahead = ReadAhead::default();
        let (chunk, _) = read(&mut ahead, &server, 5).await;
        assert_eq!(chunk, b"hello");
        assert!(ahead.buf.capacity() > 0);
        let (chunk, from_socket) = read(&mut ahead, &server, 100).await;
        assert_eq!(chunk, b", world");
        assert!(!from_socket);
        // Nothing more to read: the next poll is pending and lets the buffer go.
        let mut out = [0u8; 8];
        let mut buf = ReadBuf::new(&mut out);
        let pending =
            poll_fn(|cx| Poll::Ready(ahead.poll_read(&server, cx, &mut buf).is_pending())).await;
        assert!(pending);
        assert_eq!(ahead.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_transfer_keeps_its_buffer_until_a_small_read() {
        let (mut client, server) = pair().await;
        let mut ahead = ReadAhead::default();
        let pending = |ahead: &mut ReadAhead| {
            let mut out = [0u8; 8];
            let mut buf = ReadBuf::new(&mut out);
            ahead
                .poll_read(
                    &server,
                    &mut Context::from_waker(std::task::Waker::noop()),
                    &mut buf,
                )
                .is_pending()
        };
        client.write_all(&[7u8; 32 * 1024]).await.expect("loopback");
        // All of it in the socket first, so that one read takes it (a transfer's read).
        let mut peeked = vec![0u8; 32 * 1024];
        while server.peek(&mut peeked).await.expect("loopback") < peeked.len() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            read(&mut ahead, &server, 32 * 1024).await.0.len(),
            32 * 1024
        );
        // The socket runs dry between packets of a download: the buffer stays for the next.
        assert!(pending(&mut ahead));
        assert!(ahead.buf.capacity() > 0);
        // A small read (a keepalive) and then nothing: it goes.
        client.write_all(b"ping").await.expect("loopback");
        assert_eq!(read(&mut ahead, &server, 4).await.0, b"ping");
        assert!(pending(&mut ahead));
        assert_eq!(ahead.buf.capacity(), 0);
    }
}
