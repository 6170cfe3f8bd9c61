//! RFC 2136 dynamic UPDATE, signed with TSIG (RFC 8945): for zones on BIND, Knot, PowerDNS or
//! any other server that accepts updates.
//!
//! Each change is one UPDATE message, so it is applied atomically by the server: replacing
//! addresses deletes the A and AAAA RRsets and adds the new records in the same message. The
//! message is signed with the configured key; the answer's TSIG is checked before we believe a
//! NOERROR. Updates travel over TCP (one short connection per change): they are rare, and TCP
//! avoids both truncation and the easier spoofing of UDP.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as HickoryAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::names::{name_in_zone, parse_name, txt_strings, without_dot};
use crate::{DnsError, DnsProvider, Secret};

const KIND: &str = "rfc2136";
/// Connect, send and answer, all within this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Allowed clock difference between us and the server (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;

/// The TSIG MAC algorithm; must match the key's definition on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256`, what `tsig-keygen` and `keymgr` produce by default.
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    fn to_hickory(self) -> HickoryAlgorithm {
        match self {
            Self::HmacSha256 => HickoryAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryAlgorithm::HmacSha512,
        }
    }
}

impl FromStr for TsigAlgorithm {
    type Err = DnsError;

    /// Accepts the names used in BIND and Knot configuration (`hmac-sha256`, case-insensitive).
    fn from_str(s: &str) -> Result<Self, DnsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(Self::HmacSha256),
            "hmac-sha384" => Ok(Self::HmacSha384),
            "hmac-sha512" => Ok(Self::HmacSha512),
            other => Err(DnsError::BadInput(format!(
                "unsupported TSIG algorithm {other:?} (use hmac-sha256, hmac-sha384 or hmac-sha512)"
            ))),
        }
    }
}

/// Where and how to send updates; built by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct Rfc2136Settings {
    /// The primary server that accepts updates for the zone (TCP).
    pub server: SocketAddr,
    /// The zone as configured on the server, e.g. `example.com`.
    pub zone: String,
    /// The TSIG key's name, exactly as the server knows it (e.g. `warren-key`).
    pub key_name: String,
    /// The key's algorithm.
    pub algorithm: TsigAlgorithm,
    /// The key's secret, base64 as in the server's configuration.
    pub secret: Secret,
    /// TTL of the records we add.
    pub ttl: u32,
}

/// Changes records on an RFC 2136 server with TSIG-signed UPDATE messages.
pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    signer: TSigner,
    ttl: u32,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone.to_ascii())
            .field("key", &self.signer.signer_name().to_ascii())
            .finish_non_exhaustive()
    }
}

impl Rfc2136 {
    /// Checks the settings (zone and key names, base64 secret). Nothing is sent yet: a wrong
    /// key or an unreachable server shows on the first change.
    pub fn new(settings: Rfc2136Settings) -> Result<Self, DnsError> {
        let zone = parse_name(&settings.zone)?;
        let key_name = parse_name(&settings.key_name)?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(settings.secret.expose().trim())
            .map_err(|e| DnsError::BadInput(format!("TSIG secret is not valid base64: {e}")))?;
        if secret.is_empty() {
            return Err(DnsError::BadInput("TSIG secret is empty".into()));
        }
        let signer = TSigner::new(
            secret,
            settings.algorithm.to_hickory(),
            key_name,
            TSIG_FUDGE,
        )
        .map_err(|e| DnsError::BadInput(format!("TSIG key unusable: {e}")))?;
        Ok(Self {
            server: settings.server,
            zone,
            signer,
            ttl: settings.ttl,
        })
    }

    fn name(&self, fqdn: &str) -> Result<Name, DnsError> {
        name_in_zone(fqdn, &self.zone)
    }

    /// An UPDATE for our zone carrying `updates` in its update section.
    fn update_message(&self, updates: Vec<Record>) -> Message {
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_query(zone);
        message.add_authorities(updates);
        message
    }

    /// "Delete an RRset" (RFC 2136 §2.5.2): class ANY, TTL 0, empty data.
    fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
        let mut record = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
        record.dns_class = DNSClass::ANY;
        record
    }

    /// "Delete an RR from an RRset" (§2.5.4): class NONE, TTL 0, the record's data.
    fn delete_rr(name: &Name, data: RData) -> Record {
        let mut record = Record::from_rdata(name.clone(), 0, data);
        record.dns_class = DNSClass::NONE;
        record
    }

    /// Signs and sends one UPDATE, and turns the answer into `Ok` or a clear error.
    async fn send(&self, mut message: Message) -> Result<(), DnsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut verifier = message
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::BadInput(format!("could not sign the update: {e}")))?
            .ok_or_else(|| DnsError::BadInput("signing gave no response verifier".into()))?;
        let request = message
            .to_vec()
            .map_err(|e| DnsError::BadInput(format!("could not encode the update: {e}")))?;

        let answer = timeout(EXCHANGE_TIMEOUT, exchange(self.server, &request))
            .await
            .map_err(|_| unreachable(format!("no answer from {} in time", self.server)))??;

        let response = Message::from_vec(&answer)
            .map_err(|e| bad_response(format!("undecodable answer: {e}")))?;
        if response.id != message.id {
            return Err(bad_response(format!(
                "answer id {} does not match request id {}",
                response.id, message.id
            )));
        }
        let tsig_error = response.signature().and_then(|s| s.data.error);
        // Only success must be proven by the answer's signature: a forged error can make a
        // change fail, never make us believe one happened. (Servers answer TSIG failures
        // unsigned, RFC 8945 §5.3.2, so error answers could not be verified anyway.)
        match response.response_code {
            ResponseCode::NoError => {
                verifier.verify(&answer).map_err(|e| {
                    bad_response(format!("the answer's TSIG signature does not verify: {e}"))
                })?;
                Ok(())
            }
            ResponseCode::NotAuth if tsig_error.is_some() => Err(DnsError::AuthRefused {
                provider: KIND,
                detail: format!(
                    "the server rejected TSIG key {}: {}",
                    without_dot(self.signer.signer_name()),
                    describe_tsig_error(tsig_error)
                ),
            }),
            ResponseCode::NotAuth | ResponseCode::NotZone => Err(DnsError::ZoneNotFound {
                provider: KIND,
                zone: without_dot(&self.zone),
            }),
            ResponseCode::Refused => Err(DnsError::AuthRefused {
                provider: KIND,
                detail: format!(
                    "the server refused the update (REFUSED): its policy does not let key {} update zone {}",
                    without_dot(self.signer.signer_name()),
                    without_dot(&self.zone)
                ),
            }),
            code => Err(DnsError::Rejected {
                provider: KIND,
                detail: format!("the server answered {code}"),
            }),
        }
    }
}

/// One request/answer over a fresh TCP connection (2-byte length framing, RFC 1035 §4.2.2).
pub(crate) async fn exchange(server: SocketAddr, request: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| unreachable(format!("cannot connect to {server}: {e}")))?;
    let len = u16::try_from(request.len())
        .map_err(|_| DnsError::BadInput("update message larger than 64 KiB".into()))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| unreachable(format!("sending to {server}: {e}")))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(|e| {
        unreachable(format!(
            "{server} closed the connection without answering: {e}"
        ))
    })?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|e| unreachable(format!("reading the answer from {server}: {e}")))?;
    Ok(answer)
}

fn unreachable(detail: String) -> DnsError {
    DnsError::Unreachable {
        provider: KIND,
        detail,
    }
}

fn bad_response(detail: String) -> DnsError {
    DnsError::BadResponse {
        provider: KIND,
        detail,
    }
}

fn describe_tsig_error(error: Option<TsigError>) -> String {
    match error {
        Some(TsigError::BadSig) => "BADSIG (the secret or algorithm differs)".into(),
        Some(TsigError::BadKey) => {
            "BADKEY (the server does not know this key, or does not let it update this zone)".into()
        }
        Some(TsigError::BadTime) => "BADTIME (our clock differs from the server's)".into(),
        Some(other) => format!("{other:?}"),
        None => "no reason given".into(),
    }
}

#[async_trait::async_trait]
impl DnsProvider for Rfc2136 {
    async fn set_addresses(&self, fqdn: &str, addrs: &[IpAddr]) -> Result<(), DnsError> {
        let name = self.name(fqdn)?;
        let mut updates = vec![
            Self::delete_rrset(&name, RecordType::A),
            Self::delete_rrset(&name, RecordType::AAAA),
        ];
        let mut addrs = addrs.to_vec();
        addrs.sort();
        addrs.dedup();
        for ip in addrs {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            updates.push(Record::from_rdata(name.clone(), self.ttl, data));
        }
        tracing::debug!(name = %name, "rfc2136: replacing addresses");
        self.send(self.update_message(updates)).await
    }

    async fn remove_addresses(&self, fqdn: &str) -> Result<(), DnsError> {
        let name = self.name(fqdn)?;
        let updates = vec![
            Self::delete_rrset(&name, RecordType::A),
            Self::delete_rrset(&name, RecordType::AAAA),
        ];
        tracing::debug!(name = %name, "rfc2136: removing addresses");
        self.send(self.update_message(updates)).await
    }

    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = self.name(fqdn)?;
        let data = RData::TXT(TXT::from_bytes(txt_strings(value)));
        let add = Record::from_rdata(name.clone(), self.ttl, data);
        tracing::debug!(name = %name, "rfc2136: adding TXT");
        self.send(self.update_message(vec![add])).await
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = self.name(fqdn)?;
        let data = RData::TXT(TXT::from_bytes(txt_strings(value)));
        tracing::debug!(name = %name, "rfc2136: removing TXT");
        self.send(self.update_message(vec![Self::delete_rr(&name, data)]))
            .await
    }

    /// The server updates go to: the zone's primary. Its secondaries, if any, are not known
    /// to the broker; name them in `dns_propagation_servers` to wait for them too.
    async fn authoritative_servers(&self) -> Vec<SocketAddr> {
        vec![self.server]
    }

    /// An UPDATE with an empty update section: the server checks the TSIG key and its update
    /// policy for the zone, and changes nothing.
    async fn check(&self) -> Result<String, DnsError> {
        self.send(self.update_message(Vec::new())).await?;
        Ok(format!(
            "rfc2136: {} accepts updates to zone {} signed with key {}",
            self.server,
            without_dot(&self.zone),
            without_dot(self.signer.signer_name())
        ))
    }

    fn kind(&self) -> &'static str {
        KIND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Rfc2136Settings {
        Rfc2136Settings {
            server: "127.0.0.1:53".parse().expect("addr"),
            zone: "example.com".into(),
            key_name: "warren".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: Secret::new("c2VjcmV0LXNlY3JldC1zZWNyZXQ="),
            ttl: 60,
        }
    }

    #[test]
    fn algorithms_parse_like_server_configs() {
        assert_eq!(
            "HMAC-SHA256".parse::<TsigAlgorithm>().ok(),
            Some(TsigAlgorithm::HmacSha256)
        );
        assert_eq!(
            "hmac-sha512".parse::<TsigAlgorithm>().ok(),
            Some(TsigAlgorithm::HmacSha512)
        );
        assert!("hmac-md5".parse::<TsigAlgorithm>().is_err());
    }

    #[test]
    fn settings_are_checked_and_secret_is_masked() {
        assert!(format!("{:?}", settings()).contains("MASKED"));
        assert!(!format!("{:?}", settings()).contains("c2Vj"));
        let provider = Rfc2136::new(settings()).expect("valid");
        assert!(!format!("{provider:?}").contains("c2Vj"));
        let mut s = settings();
        s.secret = Secret::new("not base64!");
        assert!(matches!(Rfc2136::new(s), Err(DnsError::BadInput(_))));
    }

    #[test]
    fn replacing_addresses_is_one_atomic_update() {
        let p = Rfc2136::new(settings()).expect("valid");
        let name = p.name("www.example.com").expect("in zone");
        let m = p.update_message(vec![
            Rfc2136::delete_rrset(&name, RecordType::A),
            Rfc2136::delete_rr(&name, RData::TXT(TXT::new(vec!["v".into()]))),
        ]);
        assert_eq!(m.op_code, OpCode::Update);
        assert_eq!(m.queries[0].query_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].dns_class, DNSClass::ANY);
        assert_eq!(m.authorities[1].dns_class, DNSClass::NONE);
        let bytes = m.to_vec().expect("encodes");
        assert!(Message::from_vec(&bytes).is_ok());
    }
}
