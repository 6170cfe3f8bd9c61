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
