//! The built-in server's transports: a UDP loop and a TCP accept loop over sockets the caller
//! bound, both ended by the caller's cancellation token.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::BuiltinDns;
use super::answer::{self, MAX_UDP_PAYLOAD};

/// How long a TCP client may stay silent (or take to send one message) before we hang up.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Open TCP connections at once; more are closed on accept, so a flood cannot exhaust file
/// descriptors that the rest of the broker needs.
const MAX_TCP_CONNECTIONS: usize = 256;
/// Classic DNS's UDP limit, for clients that do not announce a larger one with EDNS.
const PLAIN_UDP_PAYLOAD: u16 = 512;

impl BuiltinDns {
    /// Serves the zone on `udp` and `tcp` until `shutdown` is cancelled, then waits for open
    /// TCP connections to close (they watch the same token) and returns `Ok(())`.
    ///
    /// The caller binds the sockets (port 53 in production, `127.0.0.1:0` in tests). Errors
    /// on single packets and connections are logged, never fatal; an error is returned only
    /// if the sockets are unusable from the start.
    pub async fn run(
        self: Arc<Self>,
        udp: UdpSocket,
        tcp: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.local_addr()?;
        tracing::info!(zone = %self.zone.origin, %udp_addr, %tcp_addr, "built-in DNS serving");
        let connections = TaskTracker::new();
        tokio::join!(
            self.serve_udp(&udp, &shutdown),
            self.serve_tcp(&tcp, &shutdown, &connections),
        );
        connections.close();
        connections.wait().await;
        tracing::info!(zone = %self.zone.origin, "built-in DNS stopped");
        Ok(())
    }

    /// Binds a UDP socket and a TCP listener on the same address, the way DNS is served
    /// (port 53 in production). With port 0 it picks a port free for both, retrying when the
    /// UDP port chosen by the kernel is taken for TCP.
    pub async fn bind_sockets(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
        let attempts = if addr.port() == 0 { 50 } else { 1 };
        let mut last_error = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(addr).await?;
            match TcpListener::bind(udp.local_addr()?).await {
                Ok(tcp) => return Ok((udp, tcp)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("could not bind DNS sockets")))
    }

    async fn serve_udp(&self, udp: &UdpSocket, shutdown: &CancellationToken) {
        let mut buf = vec![0u8; 4096];
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = udp.recv_from(&mut buf) => received,
            };
            let (len, peer) = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "built-in DNS: UDP receive failed");
                    // Back off briefly so a persistent socket error cannot spin a core.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(reply) = self.handle(&buf[..len], Some(peer), true) else {
                continue;
            };
            if let Err(e) = udp.send_to(&reply, peer).await {
                tracing::debug!(%peer, error = %e, "built-in DNS: UDP send failed");
            }
        }
    }

    async fn serve_tcp(
        self: &Arc<Self>,
        tcp: &TcpListener,
        shutdown: &CancellationToken,
        connections: &TaskTracker,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: give others a moment to close some.
                    tracing::warn!(error = %e, "built-in DNS: TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!(%peer, "built-in DNS: too many TCP connections, closing");
                continue;
            };
            let this = Arc::clone(self);
            let shutdown = shutdown.clone();
            connections.spawn(
                async move {
                    let _slot = slot;
                    if let Err(e) = this.serve_connection(stream, peer, shutdown).await {
                        tracing::debug!(error = %e, "built-in DNS: TCP connection ended");
                    }
                }
                .instrument(tracing::debug_span!("dns_tcp", %peer)),
            );
        }
    }

    /// Answers length-prefixed messages on one connection until EOF, idleness or shutdown.
    async fn serve_connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        loop {
            let mut len = [0u8; 2];
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                read = timeout(TCP_IDLE, stream.read_exact(&mut len)) => match read {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()), // idle
                },
            }
            let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
            timeout(TCP_IDLE, stream.read_exact(&mut message))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "slow DNS message"))??;
            let Some(reply) = self.handle(&message, Some(peer), false) else {
                return Ok(()); // not even a DNS header: nothing sensible to say
            };
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return Err(io::Error::other("DNS answer larger than 64 KiB"));
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&reply_len.to_be_bytes());
            framed.extend_from_slice(&reply);
            timeout(TCP_IDLE, stream.write_all(&framed))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "slow DNS client"))??;
        }
    }

    /// Turns one request packet into the bytes of its answer, or `None` to stay silent (too
    /// short to carry a header, or itself a response: answering those could start a loop).
    /// Undecodable requests get FORMERR; UDP answers too big for the client are truncated
    /// (TC set) so it retries over TCP.
    pub(super) fn handle(
        &self,
        packet: &[u8],
        peer: Option<SocketAddr>,
        udp: bool,
    ) -> Option<Vec<u8>> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            tracing::debug!(
                ?peer,
                len = packet.len(),
                "built-in DNS: dropped non-query packet"
            );
            return None;
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "built-in DNS: malformed query");
                let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
                return Message::error_msg(id, op_code, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        let records = self.records.load();
        let response = answer::respond(&self.zone, &records, &request);
        let bytes = match response.to_vec() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "built-in DNS: could not encode an answer");
                return Message::error_msg(id, request.op_code, ResponseCode::ServFail)
                    .to_vec()
                    .ok();
            }
        };
        if udp {
            let limit = request.edns.as_ref().map_or(PLAIN_UDP_PAYLOAD, |e| {
                e.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
            });
            if bytes.len() > usize::from(limit) {
                return response.truncate().to_vec().ok();
            }
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::BuiltinSettings;
    use super::*;
    use crate::DnsProvider;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};

    fn dns() -> BuiltinDns {
        BuiltinDns::new(BuiltinSettings {
            zone: "t.example".into(),
            ns: vec!["ns1.t.example".into()],
            soa_email: String::new(),
            ttl: 60,
            apex_addrs: vec![],
        })
        .expect("valid settings")
    }

    #[test]
    fn garbage_is_dropped_or_formerr() {
        let dns = dns();
        assert!(dns.handle(b"", None, true).is_none());
        assert!(dns.handle(&[0xff; 5], None, true).is_none());
        let mut response_bit = [0u8; 12];
        response_bit[2] = 0x80;
        assert!(
            dns.handle(&response_bit, None, true).is_none(),
            "never answer a response"
        );
        // A header claiming one question, then nothing.
        let truncated = [0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let reply = dns.handle(&truncated, None, true).expect("FORMERR");
        let m = Message::from_vec(&reply).expect("decodes");
        assert_eq!(m.id, 0x1234);
        assert_eq!(m.response_code, ResponseCode::FormErr);
    }

    #[tokio::test]
    async fn big_udp_answers_are_truncated() {
        let dns = dns();
        for i in 0..20 {
            let value = format!("{i:02}{}", "v".repeat(60));
            dns.add_txt("big.t.example", &value).await.expect("add");
        }
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("big.t.example.").expect("name"),
            RecordType::TXT,
        ));
        let packet = q.to_vec().expect("encode");
        let udp = Message::from_vec(&dns.handle(&packet, None, true).expect("reply")).expect("m");
        assert!(udp.truncation && udp.answers.is_empty());
        let tcp = Message::from_vec(&dns.handle(&packet, None, false).expect("reply")).expect("m");
        assert!(!tcp.truncation);
        assert_eq!(tcp.answers.len(), 20);
    }
}
