//! A read-ahead buffer beneath a hop's TLS session.
//!
//! rustls asks its socket for at most 4 KiB per read (its deframer grows by that much), so
//! every 16 KiB record of a bulk transfer cost four or five `recv` calls on the node decrypting
//! it: the holder for uploads, the visitor's node for downloads. Read in 32 KiB at a time
//! here, the same record costs one at most.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read from the socket at once: two full TLS records.
const READ_AHEAD: usize = 32 << 10;

/// `S` with reads served from a buffer that is filled [`READ_AHEAD`] bytes at a time; writes
/// go straight through (vectored where `S` is).
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Allocated at the first read that needs it; `buf[pos..filled]` is unread.
    buf: Option<Box<[u8]>>,
    pos: usize,
    filled: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: None,
            pos: 0,
            filled: 0,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            // A caller with room for as much reads straight into its own buffer.
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let buf = this
                .buf
                .get_or_insert_with(|| vec![0; READ_AHEAD].into_boxed_slice());
            let mut into = ReadBuf::new(buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            this.filled = into.filled().len();
            this.pos = 0;
        }
        let Some(buf) = &this.buf else {
            return Poll::Ready(Ok(()));
        };
        let n = out.remaining().min(this.filled - this.pos);
        out.put_slice(&buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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

/// `S` whose reads return everything ready now, up to the caller's room, rather than one TLS
/// record's worth (at most 16 KiB): the holder writes what it reads from the hop to the owner's
/// SSH channel, whose packets take 32 KiB, and each packet has a fixed cost (a message to the
/// session, its MAC, a write).
pub(crate) struct Coalesce<S>(pub(crate) S);

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut self.get_mut().0;
        let before = out.filled().len();
        loop {
            let start = out.filled().len();
            match Pin::new(&mut *inner).poll_read(cx, out) {
                // The end, or no room left: what was read goes up (the end comes again).
                Poll::Ready(Ok(())) if out.filled().len() == start || out.remaining() == 0 => {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {}
                // An error after some bytes: those first; the error comes again.
                Poll::Ready(Err(e)) if out.filled().len() == before => {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending if out.filled().len() == before => return Poll::Pending,
                Poll::Pending => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the stream beneath.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            Pin::new(&mut this.inner).poll_read(cx, out)
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_one_and_every_byte_arrives_in_order() {
        let (mut tx, rx) = tokio::io::duplex(256 << 10);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).await.expect("write");
        drop(tx);
        let mut r = ReadAhead::new(Counted {
            inner: rx,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = r.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        // 25 reads of 4 KiB above; 4 of 32 KiB (and the one that saw the end) beneath.
        assert_eq!(r.inner.reads, 5);
    }

    /// Gives at most `max` bytes per read, as a TLS stream gives one record.
    struct Dribble<S> {
        inner: S,
        max: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Dribble<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let mut small = vec![0u8; this.max.min(out.remaining())];
            let mut into = ReadBuf::new(&mut small);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            out.put_slice(into.filled());
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn coalesced_reads_take_everything_ready_and_no_more_than_there_is_room_for() {
        let (mut tx, rx) = tokio::io::duplex(256 << 10);
        tx.write_all(&[1u8; 40_000]).await.expect("write");
        let mut r = Coalesce(Dribble {
            inner: rx,
            max: 16 << 10,
        });
        let mut buf = vec![0u8; 32 << 10];
        assert_eq!(r.read(&mut buf).await.expect("read"), 32 << 10);
        // What is left, though less than there is room for: nothing more is waited for.
        assert_eq!(r.read(&mut buf).await.expect("read"), 40_000 - (32 << 10));
        tx.write_all(b"end").await.expect("write");
        drop(tx);
        assert_eq!(r.read(&mut buf).await.expect("read"), 3);
        assert_eq!(r.read(&mut buf).await.expect("read"), 0);
    }

    #[tokio::test]
    async fn a_large_read_goes_straight_through() {
        let (mut tx, rx) = tokio::io::duplex(256 << 10);
        tx.write_all(&[7u8; 40_000]).await.expect("write");
        let mut r = ReadAhead::new(rx);
        let mut big = vec![0u8; 64 << 10];
        let n = r.read(&mut big).await.expect("read");
        assert_eq!(n, 40_000);
        assert!(r.buf.is_none(), "no buffer was needed");
    }
}
