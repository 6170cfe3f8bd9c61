//! What a stream between nodes starts with: a PROXY protocol v2 header from the dialer (the
//! visitor's address, the tunnel's name as the authority TLV), then one status from the
//! listener.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ppp::v2::{Addresses, Builder, Command, Header, PROTOCOL_PREFIX, Protocol, Type, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::PeerError;

/// The listener opened the owner's channel: bytes follow.
pub(crate) const OPENED: u8 = 0;
/// Nothing answered behind the owner's client.
pub(crate) const REFUSED: u8 = 1;
/// The owner's session did not give a channel.
pub(crate) const UNREACHABLE: u8 = 2;
/// No session of that node serves the name (it moved, or the view was stale).
pub(crate) const NOT_HERE: u8 = 3;

/// The TLV (PROXY v2's first custom type) that marks a stream of lines for owners, sent by
/// the node their visitors reached (`Command::Local`: no visitor of its own).
const LINES_TLV: u8 = 0xE0;
/// A line for an owner longer than this is cut; a record longer than the cut line and its
/// name ends the stream.
pub(crate) const MAX_LINE: usize = 2048;

/// What a stream from another node is for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A visitor's bytes for the tunnel `name`.
    Visitor(SocketAddr, String),
    /// Lines for owners of this node's tunnels, one `NAME\tLINE\n` record each.
    Lines,
}

/// A header longer than this is refused (a name is at most 253 bytes, addresses 36).
const MAX_HEADER: usize = 512;
/// A status reason longer than this is cut.
const MAX_REASON: usize = 1024;

/// The header a dialer sends for `visitor` wanting `name`.
pub(crate) fn header(visitor: SocketAddr, name: &str) -> Result<Vec<u8>, PeerError> {
    // The visitor's destination (the address they reached) is not known to an endpoint, and
    // nothing uses it: the unspecified address of the same family.
    let here = match visitor {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (visitor, here),
    )
    .write_tlv(Type::Authority, name.as_bytes())
    .and_then(Builder::build)
    .map_err(|e| PeerError::Header(e.to_string()))
}

/// The header of a stream of lines for owners.
pub(crate) fn lines_header() -> Result<Vec<u8>, PeerError> {
    // Unspecified addresses of a family, not `AF_UNSPEC`: with no family, a reader must take
    // the whole payload for the address, and the mark would not be read.
    let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Stream,
        (none, none),
    )
    .write_tlv(LINES_TLV, b"1")
    .and_then(Builder::build)
    .map_err(|e| PeerError::Header(e.to_string()))
}

/// One record of a lines stream: the line cut to [`MAX_LINE`] bytes, on one line.
pub(crate) fn line_record(out: &mut Vec<u8>, name: &str, line: &str) {
    let mut end = line.len().min(MAX_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'\t');
    out.extend(
        line[..end]
            .bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'\n');
}

/// Reads a header: a visitor and the tunnel's name, or a stream of lines.
pub(crate) async fn read_header(r: &mut (impl AsyncRead + Unpin)) -> Result<Opening, PeerError> {
    let bad = |why: &str| PeerError::Header(why.to_owned());
    let mut all = vec![0u8; 16];
    r.read_exact(&mut all).await?;
    if all[..PROTOCOL_PREFIX.len()] != PROTOCOL_PREFIX[..] {
        return Err(bad("no PROXY v2 signature"));
    }
    let len = usize::from(u16::from_be_bytes([all[14], all[15]]));
    if 16 + len > MAX_HEADER {
        return Err(bad("too long"));
    }
    all.resize(16 + len, 0);
    r.read_exact(&mut all[16..]).await?;
    let header = Header::try_from(all.as_slice()).map_err(|e| PeerError::Header(e.to_string()))?;
    if header.command == Command::Local {
        return match header
            .tlvs()
            .filter_map(Result::ok)
            .any(|t| t.kind == LINES_TLV)
        {
            true => Ok(Opening::Lines),
            false => Err(bad("a LOCAL header that is not a stream of lines")),
        };
    }
    let visitor = match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        _ => return Err(bad("no visitor address")),
    };
    let name = header
        .tlvs()
        .filter_map(Result::ok)
        .find(|t| t.kind == Type::Authority as u8)
        .ok_or_else(|| bad("no tunnel name"))?;
    let name = String::from_utf8(name.value.to_vec()).map_err(|_| bad("tunnel name not UTF-8"))?;
    Ok(Opening::Visitor(visitor, name))
}

/// The listener's answer: a status, then (unless [`OPENED`]) a reason.
pub(crate) async fn write_status(
    w: &mut (impl AsyncWrite + Unpin),
    status: u8,
    reason: &str,
) -> std::io::Result<()> {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut out = Vec::with_capacity(3 + reason.len());
    out.push(status);
    if status != OPENED {
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
    }
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads the listener's answer: `Ok(())` when opened, else the status and its reason.
pub(crate) async fn read_status(
    r: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Result<(), (u8, String)>> {
    let status = r.read_u8().await?;
    if status == OPENED {
        return Ok(Ok(()));
    }
    let len = usize::from(r.read_u16().await?).min(MAX_REASON);
    let mut reason = vec![0u8; len];
    r.read_exact(&mut reason).await?;
    Ok(Err((status, String::from_utf8_lossy(&reason).into_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_header_carries_the_visitor_and_the_name() {
        for visitor in ["203.0.113.9:51234", "[2001:db8::7]:443"] {
            let visitor: SocketAddr = visitor.parse().expect("addr");
            let bytes = header(visitor, "chat").expect("header");
            let mut r = bytes.as_slice();
            let opening = read_header(&mut r).await.expect("parse");
            assert_eq!(opening, Opening::Visitor(visitor, "chat".into()));
            assert!(r.is_empty(), "the header is read exactly");
        }
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        for bytes in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), {
            let mut h = header("192.0.2.1:1".parse().expect("addr"), "a").expect("h");
            h[14] = 0xff; // a length past the limit
            h
        }] {
            let mut r = bytes.as_slice();
            assert!(read_header(&mut r).await.is_err());
        }
        // A header without the name.
        let bare = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (
                "192.0.2.1:1".parse::<SocketAddr>().expect("addr"),
                "0.0.0.0:0".parse::<SocketAddr>().expect("addr"),
            ),
        )
        .build()
        .expect("build");
        let err = read_header(&mut bare.as_slice())
            .await
            .expect_err("no name");
        assert!(err.to_string().contains("no tunnel name"), "{err}");
    }

    #[tokio::test]
    async fn a_lines_header_and_its_records() {
        let bytes = lines_header().expect("header");
        assert_eq!(
            read_header(&mut bytes.as_slice()).await.expect("parse"),
            Opening::Lines
        );
        // A LOCAL header without the mark is nothing we know.
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        )
        .build()
        .expect("build");
        assert!(read_header(&mut local.as_slice()).await.is_err());
        // One record per line, whatever the line holds; cut on a character boundary.
        let mut out = Vec::new();
        line_record(&mut out, "app", "GET /a\nb 200 1ms");
        line_record(&mut out, "app", &"é".repeat(MAX_LINE));
        let text = String::from_utf8(out).expect("utf-8");
        let records: Vec<_> = text.lines().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], "app\tGET /a b 200 1ms");
        assert_eq!(records[1].len(), 4 + MAX_LINE);
    }

    #[tokio::test]
    async fn statuses_round_trip() {
        let mut buf = Vec::new();
        write_status(&mut buf, OPENED, "ignored").await.expect("w");
        write_status(&mut buf, REFUSED, "nothing on :8080")
            .await
            .expect("w");
        let mut r = buf.as_slice();
        assert_eq!(read_status(&mut r).await.expect("r"), Ok(()));
        assert_eq!(
            read_status(&mut r).await.expect("r"),
            Err((REFUSED, "nothing on :8080".to_owned()))
        );
    }
}
