//! Reading one PROXY protocol header (v1 or v2) off the front of a connection, and nothing
//! after it.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Why a connection's header was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Nothing, or not all of it, arrived in time.
    #[error("no whole PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The connection starts with something else.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// It starts like one but does not parse.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The source closed without sending a byte: a balancer's TCP health check (connect,
    /// close), not a refusal. (One that closes partway through its header leaves bytes that
    /// a peek keeps seeing, and ends as [`HeaderError::Timeout`].)
    #[error("the connection closed without sending anything")]
    Empty,
    /// Too many headers are being read already.
    #[error("too many PROXY protocol headers being read at once")]
    Busy,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A v1 header is at most this long, its CRLF included (the spec's bound).
const MAX_V1: usize = 107;
/// A v2 header longer than this is refused. Its addresses take at most 216 bytes; the rest is
/// TLVs (HAProxy's unique id, TLS details), a few hundred bytes at most in practice.
const MAX_V2: usize = 16 + 4096;
/// A header split over several segments is peeked again after this, doubling up to
/// [`MAX_PAUSE`]. A balancer sends it in one segment: the first peek finds it whole.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Reads the header at the start of `socket` and consumes exactly its bytes. Returns the
/// client it names, or `None` for one that names none: v2 `LOCAL` and v1 `UNKNOWN`, which a
/// balancer sends for its own connections (health checks), and v2 addresses that are not IP.
pub async fn read_header(
    socket: &mut TcpStream,
    deadline: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    let read = async {
        let mut buf = vec![0u8; MAX_V2];
        let mut pause = FIRST_PAUSE;
        loop {
            let n = socket.peek(&mut buf).await?;
            if n == 0 {
                return Err(HeaderError::Empty);
            }
            if let Some((len, client)) = parse(&buf[..n])? {
                socket.read_exact(&mut buf[..len]).await?;
                return Ok(client);
            }
            // Not all of it yet: a peek now would return at once with the same bytes.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(HeaderError::Timeout(deadline)))
}

/// Parses the header at the start of `bytes`: its length and the client it names, `None`
/// while it may still be incomplete. (Public for the fuzz target.)
#[allow(clippy::type_complexity)]
pub fn parse(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, HeaderError> {
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if starts(v2::PROTOCOL_PREFIX) {
        if bytes.len() < 16 {
            return Ok(None);
        }
        let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if len > MAX_V2 {
            return Err(HeaderError::Malformed(format!(
                "v2 header of {len} bytes (at most {MAX_V2})"
            )));
        }
        if bytes.len() < len {
            return Ok(None);
        }
        let header = v2::Header::try_from(&bytes[..len])
            .map_err(|e| HeaderError::Malformed(e.to_string()))?;
        let client = match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        };
        return Ok(Some((len, client)));
    }
    if starts(b"PROXY ") {
        let window = &bytes[..bytes.len().min(MAX_V1)];
        let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
            return match bytes.len() >= MAX_V1 {
                true => Err(HeaderError::Malformed(format!(
                    "v1 header without CRLF in its first {MAX_V1} bytes"
                ))),
                false => Ok(None),
            };
        };
        let len = cr + 2;
        let header = v1::Header::try_from(&bytes[..len])
            .map_err(|e| HeaderError::Malformed(e.to_string()))?;
        let client = match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        };
        return Ok(Some((len, client)));
    }
    Err(HeaderError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::AsyncWriteExt;

    fn v2_header(command: v2::Command, client: SocketAddr) -> Vec<u8> {
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 80));
        v2::Builder::with_addresses(
            v2::Version::Two | command,
            v2::Protocol::Stream,
            (client, to),
        )
        .write_tlv(v2::Type::UniqueId, b"abc")
        .and_then(v2::Builder::build)
        .expect("header")
    }

    #[test]
    fn each_form_gives_its_length_and_client() {
        let client: SocketAddr = "203.0.113.9:51234".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::7]:443".parse().expect("addr");
        let v1_text = b"PROXY TCP4 203.0.113.9 192.0.2.1 51234 80\r\nGET /".to_vec();
        assert_eq!(
            parse(&v1_text).expect("v1"),
            Some((v1_text.len() - 5, Some(client)))
        );
        let v1_six = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 443\r\n";
        assert_eq!(
            parse(v1_six).expect("v1 v6"),
            Some((v1_six.len(), Some(v6)))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nSSH-2.0").expect("unknown"),
            Some((15, None))
        );
        let mut v2_bytes = v2_header(v2::Command::Proxy, client);
        let len = v2_bytes.len();
        v2_bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&v2_bytes).expect("v2"), Some((len, Some(client))));
        let local = v2_header(v2::Command::Local, client);
        assert_eq!(parse(&local).expect("local"), Some((local.len(), None)));
    }

    #[test]
    fn a_partial_header_asks_for_more_and_garbage_is_refused() {
        let whole = v2_header(v2::Command::Proxy, "192.0.2.7:1".parse().expect("addr"));
        for cut in [1, 11, 12, 15, 16, whole.len() - 1] {
            assert_eq!(
                parse(&whole[..cut]).expect("partial v2"),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(parse(b"PROX").expect("partial v1"), None);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7").expect("partial v1"), None);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(matches!(parse(bad), Err(HeaderError::Missing)), "{bad:?}");
        }
        for bad in [
            &b"PROXY TCP4 300.0.0.1 192.0.2.1 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1\r\n",
            &[b"PROXY ".as_slice(), &[b'1'; 120]].concat(),
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut long = whole.clone();
        long[14] = 0xff;
        long[15] = 0xff;
        assert!(matches!(parse(&long), Err(HeaderError::Malformed(_))));
    }

    /// A header sent in pieces is waited for, and the bytes after it are left for the
    /// listener's protocol.
    #[tokio::test]
    async fn a_header_split_across_segments_is_read_exactly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client: SocketAddr = "198.51.100.4:40000".parse().expect("addr");
        let header = v2_header(v2::Command::Proxy, client);
        let sender = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s.write_all(&header[..10]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(30)).await;
            s.write_all(&header[10..]).await.expect("write");
            s.write_all(b"hello").await.expect("write");
            s
        });
        let (mut socket, _) = listener.accept().await.expect("accept");
        let got = read_header(&mut socket, Duration::from_secs(5))
            .await
            .expect("header");
        assert_eq!(got, Some(client));
        let mut rest = [0u8; 5];
        socket.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"hello");
        drop(sender.await.expect("sender"));
    }

    #[tokio::test]
    async fn a_silent_source_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _idle = TcpStream::connect(addr).await.expect("connect");
        let (mut socket, _) = listener.accept().await.expect("accept");
        let e = read_header(&mut socket, Duration::from_millis(100))
            .await
            .expect_err("nothing sent");
        assert!(matches!(e, HeaderError::Timeout(_)), "{e}");
    }
}
