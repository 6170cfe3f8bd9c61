//! What a stream between nodes starts with: a PROXY protocol v2 header from the dialer (the
//! visitor's address, the tunnel's name as the authority TLV), then one status from the
//! listener. Two other kinds of stream start with a `LOCAL` header and a mark of ours: the
//! records a node sends to the node holding its visitors' tunnels (lines for owners, request
//! log entries), and a reading of a tunnel's request log from the node that keeps it.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ppp::v2::{Addresses, Builder, Command, Header, PROTOCOL_PREFIX, Protocol, Type, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use warren_registry::{RequestEntry, RouteStats};

use crate::PeerError;

/// The listener opened the owner's channel: bytes follow.
pub(crate) const OPENED: u8 = 0;
/// Nothing answered behind the owner's client.
pub(crate) const REFUSED: u8 = 1;
/// The owner's session did not give a channel.
pub(crate) const UNREACHABLE: u8 = 2;
/// No session of that node serves the name (it moved, or the view was stale).
pub(crate) const NOT_HERE: u8 = 3;

/// The TLV (PROXY v2's first custom type) that marks a stream of records for the tunnels of
/// the node it goes to, sent by the node their visitors reached (`Command::Local`: no visitor
/// of its own). Its value is the records' format: `1`, a line for an owner per record
/// (`NAME\tLINE\n`), as the first nodes that had it send; `2`, typed records
/// ([`line_record`], [`entry_record`], [`counts_record`]), each after the owner it is for
/// (`O\tOWNER\t`) from the nodes that send owners.
const RECORDS_TLV: u8 = 0xE0;
/// The TLV that marks a reading of a tunnel's request log (the tunnel's name is the authority
/// TLV): its value is `OWNER\tFOLLOW`, the owner the reader was allowed for and `1` to follow.
const LOG_TLV: u8 = 0xE1;
/// The TLV that marks a question for counters: the asking node sends names, one a line, and an
/// empty line; the answer is a line of counters for each name held here ([`stats_line`]).
const STATS_TLV: u8 = 0xE2;
/// A line for an owner longer than this is cut.
pub(crate) const MAX_LINE: usize = 2048;
/// The most an owner adds to a record (`O\t`, an i64's 20 characters, `\t`), for the senders'
/// buffers.
pub(crate) const OWNED_LEN: usize = 23;
/// A record longer than this ends the stream it came on: a name (at most 253 bytes, or
/// `tcp:PORT`), a cut line, or an entry (the edge cuts its text to about 1.5 KB; escaped in
/// JSON, at most six times that).
pub(crate) const MAX_RECORD: usize = 16 << 10;

/// Reads the next record of a stream (a line of at most [`MAX_RECORD`] bytes) into `buf` and
/// gives it without its line break: `None` at the stream's end, an error for a longer one.
pub(crate) async fn read_record<'b>(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    buf: &'b mut Vec<u8>,
) -> std::io::Result<Option<&'b [u8]>> {
    use tokio::io::AsyncBufReadExt;
    buf.clear();
    if r.take(MAX_RECORD as u64).read_until(b'\n', buf).await? == 0 {
        return Ok(None);
    }
    match buf.strip_suffix(b"\n") {
        Some(record) => Ok(Some(record)),
        None => Err(std::io::Error::other("a record too long, or cut short")),
    }
}

/// What a stream from another node is for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A visitor's bytes for the tunnel `name`.
    Visitor(SocketAddr, String),
    /// Records for the tunnels of this node; `typed` in the second format (see
    /// [`RECORDS_TLV`]).
    Records {
        /// Whether each record starts with its kind.
        typed: bool,
    },
    /// A question for the counters of this node's tunnels.
    Stats,
    /// A reading of the request log of `name`, for a reader allowed to see `owner`'s.
    Log {
        /// The tunnel.
        name: String,
        /// Its owner, as the reader's node knows it: a log of anyone else's is not sent.
        owner: i64,
        /// Whether each entry after the recent ones follows as it is made.
        follow: bool,
    },
}

/// One record of a records stream, or of a log reading.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A line for the owner of `name`.
    Line(String, String),
    /// A request to `name` that a visitor made on the sending node.
    Entry(String, RequestEntry),
    /// What the sending node's visitors of `name` did since its last report.
    Counts(String, Counts),
}

/// A node's report of its visitors of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    /// Requests (or connections) since the last report.
    pub(crate) requests: u64,
    /// Bytes from visitors since the last report.
    pub(crate) bytes_in: u64,
    /// Bytes to visitors since the last report.
    pub(crate) bytes_out: u64,
    /// Visitor connections open now.
    pub(crate) connections: u64,
}

/// One record of a log reading, from the node that keeps the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogRecord {
    /// An entry, oldest first.
    Entry(RequestEntry),
    /// The recent entries have all been sent; what follows was made after.
    Now,
    /// This many entries went by while the reader was behind.
    Lagged(u64),
}

/// A request log entry as it travels: its fields, named.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireEntry<'a> {
    at_ms: u64,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    status: u16,
    duration_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    visitor: IpAddr,
    #[serde(borrow)]
    user_agent: Cow<'a, str>,
    #[serde(borrow)]
    headers: Cow<'a, str>,
    complete: bool,
}

impl<'a> From<&'a RequestEntry> for WireEntry<'a> {
    fn from(e: &'a RequestEntry) -> Self {
        Self {
            at_ms: e.at_ms,
            method: Cow::Borrowed(&e.method),
            path: Cow::Borrowed(&e.path),
            status: e.status,
            duration_us: e.duration.as_micros().try_into().unwrap_or(u64::MAX),
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            visitor: e.visitor,
            user_agent: Cow::Borrowed(&e.user_agent),
            headers: Cow::Borrowed(&e.headers),
            complete: e.complete,
        }
    }
}

impl WireEntry<'_> {
    fn into_entry(self) -> RequestEntry {
        RequestEntry {
            at_ms: self.at_ms,
            method: Cow::Owned(self.method.into_owned()),
            path: self.path.into_owned(),
            status: self.status,
            duration: Duration::from_micros(self.duration_us),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            visitor: self.visitor,
            user_agent: self.user_agent.into_owned(),
            headers: self.headers.into_owned(),
            complete: self.complete,
        }
    }
}

/// Appends `entry` as JSON (which escapes every line break: one line).
fn push_entry(out: &mut Vec<u8>, entry: &RequestEntry) {
    // Writing into a Vec fails only on a value serde cannot encode; the entry has none.
    let _ = serde_json::to_writer(&mut *out, &WireEntry::from(entry));
}

fn parse_entry(json: &[u8]) -> Option<RequestEntry> {
    serde_json::from_slice::<WireEntry<'_>>(json)
        .ok()
        .map(WireEntry::into_entry)
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

/// A `LOCAL` header (no visitor) with `tlvs`.
fn local_header(tlvs: &[(u8, &[u8])]) -> Result<Vec<u8>, PeerError> {
    // Unspecified addresses of a family, not `AF_UNSPEC`: with no family, a reader must take
    // the whole payload for the address, and the marks would not be read.
    let none = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let mut builder = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Stream,
        (none, none),
    );
    for (kind, value) in tlvs {
        builder = builder
            .write_tlv(*kind, value)
            .map_err(|e| PeerError::Header(e.to_string()))?;
    }
    builder
        .build()
        .map_err(|e| PeerError::Header(e.to_string()))
}

/// The header of a stream of records for another node's tunnels, in the typed format.
pub(crate) fn records_header() -> Result<Vec<u8>, PeerError> {
    local_header(&[(RECORDS_TLV, b"2")])
}

/// The header of a question for counters.
pub(crate) fn stats_header() -> Result<Vec<u8>, PeerError> {
    local_header(&[(STATS_TLV, b"1")])
}

/// A line of counters: `NAME\tSINCE\tREQUESTS\tIN\tOUT\tCONNECTIONS\tMAX\n`.
pub(crate) fn stats_line(out: &mut Vec<u8>, name: &str, s: &RouteStats) {
    out.extend_from_slice(
        format!(
            "{name}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            s.since, s.requests, s.bytes_in, s.bytes_out, s.connections, s.max_connections
        )
        .as_bytes(),
    );
}

/// Reads a line of counters (without its line break).
pub(crate) fn parse_stats_line(line: &[u8]) -> Option<(String, RouteStats)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut f = line.split('\t');
    let name = f.next()?.to_owned();
    let mut n = || f.next()?.parse::<u64>().ok();
    let stats = RouteStats {
        since: n()?,
        requests: n()?,
        bytes_in: n()?,
        bytes_out: n()?,
        connections: usize::try_from(n()?).ok()?,
        max_connections: usize::try_from(n()?).ok()?,
    };
    Some((name, stats))
}

/// The header of a reading of `name`'s request log, for a reader allowed `owner`'s.
pub(crate) fn log_header(name: &str, owner: i64, follow: bool) -> Result<Vec<u8>, PeerError> {
    let value = format!("{owner}\t{}", u8::from(follow));
    local_header(&[
        (Type::Authority as u8, name.as_bytes()),
        (LOG_TLV, value.as_bytes()),
    ])
}

/// Starts a record for a tunnel of `owner`. The holder drops a record whose owner no longer
/// holds the name (it changed hands between the visit and the record's arrival), so one
/// tenant's visitors never reach another's log, terminal or counters. A node from before
/// owners were sent skips the whole record, as of a kind it does not know.
fn owned(out: &mut Vec<u8>, owner: i64) {
    use std::io::Write as _;
    // Straight into the record (one a request on the hop): writing into a Vec cannot fail.
    let _ = write!(out, "O\t{owner}\t");
}

/// A record of a line for `owner`'s tunnel `name`: the line cut to [`MAX_LINE`] bytes, on
/// one line.
pub(crate) fn line_record(out: &mut Vec<u8>, owner: i64, name: &str, line: &str) {
    owned(out, owner);
    let mut end = line.len().min(MAX_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(b"L\t");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\t');
    out.extend(
        line[..end]
            .bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'\n');
}

/// A record of a request a visitor made to `owner`'s tunnel `name`.
pub(crate) fn entry_record(out: &mut Vec<u8>, owner: i64, name: &str, entry: &RequestEntry) {
    owned(out, owner);
    out.extend_from_slice(b"E\t");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\t');
    push_entry(out, entry);
    out.push(b'\n');
}

/// A record of what this node's visitors of `owner`'s tunnel `name` did since the last.
pub(crate) fn counts_record(out: &mut Vec<u8>, owner: i64, name: &str, c: &Counts) {
    owned(out, owner);
    out.extend_from_slice(
        format!(
            "C\t{name}\t{}\t{}\t{}\t{}\n",
            c.requests, c.bytes_in, c.bytes_out, c.connections
        )
        .as_bytes(),
    );
}

/// Reads one record (without its line break) of a records stream in the `typed` format or the
/// first, and the owner it is for when it says (nodes from before owners were sent do not);
/// `None` for a record of a kind this node does not know (a later node's), skipped.
pub(crate) fn parse_record(record: &[u8], typed: bool) -> Option<(Option<i64>, Record)> {
    if typed && let [b'O', b'\t', rest @ ..] = record {
        let tab = rest.iter().position(|b| *b == b'\t')?;
        let owner = std::str::from_utf8(&rest[..tab]).ok()?.parse().ok()?;
        return parse_kind(&rest[tab + 1..], true).map(|r| (Some(owner), r));
    }
    parse_kind(record, typed).map(|r| (None, r))
}

/// A record after its owner, if any.
fn parse_kind(record: &[u8], typed: bool) -> Option<Record> {
    let split = |r: &[u8]| {
        let tab = r.iter().position(|b| *b == b'\t')?;
        Some((String::from_utf8_lossy(&r[..tab]).into_owned(), tab + 1))
    };
    let line = |r: &[u8]| {
        let (name, at) = split(r)?;
        Some(Record::Line(
            name,
            String::from_utf8_lossy(&r[at..]).into_owned(),
        ))
    };
    if !typed {
        return line(record);
    }
    match record {
        [b'L', b'\t', rest @ ..] => line(rest),
        [b'E', b'\t', rest @ ..] => {
            let (name, at) = split(rest)?;
            Some(Record::Entry(name, parse_entry(&rest[at..])?))
        }
        [b'C', b'\t', rest @ ..] => {
            let (name, at) = split(rest)?;
            let text = std::str::from_utf8(&rest[at..]).ok()?;
            let mut n = text.split('\t').map(|v| v.parse::<u64>().ok());
            let mut next = || n.next().flatten();
            let counts = Counts {
                requests: next()?,
                bytes_in: next()?,
                bytes_out: next()?,
                connections: next()?,
            };
            Some(Record::Counts(name, counts))
        }
        _ => None,
    }
}

/// A record of a log reading: `entry`, or (`None`) the end of the recent ones.
pub(crate) fn log_record(out: &mut Vec<u8>, entry: Option<&RequestEntry>) {
    match entry {
        Some(e) => {
            out.extend_from_slice(b"E\t");
            push_entry(out, e);
        }
        None => out.push(b'N'),
    }
    out.push(b'\n');
}

/// A record of a log reading: `n` entries went by while the reader was behind.
pub(crate) fn lagged_record(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(format!("G\t{n}\n").as_bytes());
}

/// Reads one record (without its line break) of a log reading.
pub(crate) fn parse_log_record(record: &[u8]) -> Option<LogRecord> {
    match record {
        [b'E', b'\t', json @ ..] => parse_entry(json).map(LogRecord::Entry),
        [b'N'] => Some(LogRecord::Now),
        [b'G', b'\t', n @ ..] => std::str::from_utf8(n)
            .ok()?
            .parse()
            .ok()
            .map(LogRecord::Lagged),
        _ => None,
    }
}

/// An entry a log reading carried, as the reader hands it on.
pub(crate) fn followed(record: LogRecord) -> Option<warren_registry::Followed> {
    match record {
        LogRecord::Entry(e) => Some(warren_registry::Followed::Entry(Arc::new(e))),
        LogRecord::Lagged(n) => Some(warren_registry::Followed::Lagged(n)),
        LogRecord::Now => None,
    }
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
    let tlv = |kind: u8| {
        header
            .tlvs()
            .filter_map(Result::ok)
            .find(|t| t.kind == kind)
            .map(|t| t.value.into_owned())
    };
    if header.command == Command::Local {
        if tlv(STATS_TLV).is_some() {
            return Ok(Opening::Stats);
        }
        if let Some(format) = tlv(RECORDS_TLV) {
            return Ok(Opening::Records {
                typed: format.as_slice() != b"1",
            });
        }
        let Some(log) = tlv(LOG_TLV) else {
            return Err(bad("a LOCAL header of no kind this node knows"));
        };
        let name = tlv(Type::Authority as u8).ok_or_else(|| bad("no tunnel name"))?;
        let name = String::from_utf8(name).map_err(|_| bad("tunnel name not UTF-8"))?;
        let log = String::from_utf8_lossy(&log).into_owned();
        let (owner, follow) = log
            .split_once('\t')
            .and_then(|(o, f)| Some((o.parse().ok()?, f == "1")))
            .ok_or_else(|| bad("a log reading without its owner"))?;
        return Ok(Opening::Log {
            name,
            owner,
            follow,
        });
    }
    let visitor = match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        _ => return Err(bad("no visitor address")),
    };
    let name = tlv(Type::Authority as u8).ok_or_else(|| bad("no tunnel name"))?;
    let name = String::from_utf8(name).map_err(|_| bad("tunnel name not UTF-8"))?;
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
    async fn a_records_header_and_its_records() {
        let bytes = records_header().expect("header");
        assert_eq!(
            read_header(&mut bytes.as_slice()).await.expect("parse"),
            Opening::Records { typed: true }
        );
        // A LOCAL header without a mark is nothing we know.
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
        line_record(&mut out, 7, "app", "GET /a\nb 200 1ms");
        line_record(&mut out, 7, "app", &"é".repeat(MAX_LINE));
        let entry = RequestEntry {
            at_ms: 1,
            method: Cow::Borrowed("GET"),
            path: "/a\nb".into(),
            status: 404,
            duration: Duration::from_micros(7),
            bytes_in: 1,
            bytes_out: 2,
            visitor: IpAddr::from([192, 0, 2, 1]),
            user_agent: "x\ty".into(),
            headers: "host: a\nx-y: z".into(),
            complete: false,
        };
        entry_record(&mut out, -1, "app", &entry);
        let records: Vec<_> = out.split(|b| *b == b'\n').collect();
        assert_eq!(records.len(), 4, "three records, each on one line");
        assert_eq!(
            parse_record(records[0], true),
            Some((
                Some(7),
                Record::Line("app".into(), "GET /a b 200 1ms".into())
            ))
        );
        match parse_record(records[1], true) {
            Some((Some(7), Record::Line(name, line))) => {
                assert_eq!((name.as_str(), line.len()), ("app", MAX_LINE))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_record(records[2], true),
            Some((Some(-1), Record::Entry("app".into(), entry)))
        );
        // A kind this node does not know is skipped, owned or not, as is an owner that is not
        // a number or owns nothing; a record from a node that sends no owner says none; a
        // first-format stream is all lines.
        assert_eq!(parse_record(b"Z\tapp\t{}", true), None);
        assert_eq!(parse_record(b"O\t7\tZ\tapp\t{}", true), None);
        assert_eq!(parse_record(b"O\tseven\tL\tapp\tGET /", true), None);
        assert_eq!(parse_record(b"O\t7", true), None);
        assert_eq!(parse_record(b"O\t7\tO\t7\tL\tapp\tGET /", true), None);
        assert_eq!(
            parse_record(b"L\tapp\tGET / 200 1ms", true),
            Some((None, Record::Line("app".into(), "GET / 200 1ms".into())))
        );
        assert_eq!(
            parse_record(b"app\tGET / 200 1ms", false),
            Some((None, Record::Line("app".into(), "GET / 200 1ms".into())))
        );
    }

    #[tokio::test]
    async fn a_log_reading_names_its_tunnel_owner_and_whether_it_follows() {
        for (owner, follow) in [(7, true), (-1, false)] {
            let bytes = log_header("chat", owner, follow).expect("header");
            assert_eq!(
                read_header(&mut bytes.as_slice()).await.expect("parse"),
                Opening::Log {
                    name: "chat".into(),
                    owner,
                    follow
                }
            );
        }
        let mut out = Vec::new();
        log_record(&mut out, None);
        lagged_record(&mut out, 12);
        let records: Vec<_> = out.split(|b| *b == b'\n').collect();
        assert_eq!(parse_log_record(records[0]), Some(LogRecord::Now));
        assert_eq!(parse_log_record(records[1]), Some(LogRecord::Lagged(12)));
        assert_eq!(parse_log_record(b"E\tnot json"), None);
    }

    #[tokio::test]
    async fn counts_and_counters_round_trip() {
        let bytes = stats_header().expect("header");
        assert_eq!(
            read_header(&mut bytes.as_slice()).await.expect("parse"),
            Opening::Stats
        );
        let c = Counts {
            requests: 3,
            bytes_in: 4,
            bytes_out: u64::MAX,
            connections: 2,
        };
        let mut out = Vec::new();
        counts_record(&mut out, 7, "app", &c);
        assert_eq!(
            parse_record(out.strip_suffix(b"\n").expect("one line"), true),
            Some((Some(7), Record::Counts("app".into(), c)))
        );
        let stats = RouteStats {
            since: 1_780_000_000,
            requests: 9,
            bytes_in: 8,
            bytes_out: 7,
            connections: 6,
            max_connections: 512,
        };
        let mut out = Vec::new();
        stats_line(&mut out, "tcp:4000", &stats);
        assert_eq!(
            parse_stats_line(out.strip_suffix(b"\n").expect("one line")),
            Some(("tcp:4000".to_owned(), stats))
        );
        assert_eq!(parse_stats_line(b"app\t1\t2"), None);
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
