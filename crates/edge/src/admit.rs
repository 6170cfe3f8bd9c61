//! Visitors refused at accept time (`warren-admit`): past the per-IP count, the per-IP rate
//! or the global cap on connections without a request head yet.
//!
//! On plain HTTP the refusal is answered: a fixed response written with one non-blocking write
//! into the fresh socket's empty send buffer, no task, no read, so it costs what the close
//! would anyway. A browser shows why, and a well-behaved client waits `Retry-After`. On HTTPS
//! an answer would need a TLS handshake, which is the very work a flood must not get from us:
//! those connections, and raw TCP ones, are closed at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::warn;
use warren_admit::{Refusal, Throttle, Ticket};
use warren_metrics::{Limit, Metrics};

use crate::Edge;

/// The head deadline of a connection accepted while at least three quarters of the pending
/// places are taken. A browser sends its request head (or ClientHello) one round trip after
/// connecting; only a stranger holding connections idle needs the configured 20 s. Connections
/// accepted under pressure are thus cut within seconds, so strangers from many addresses cannot
/// keep every pending place (and every new honest visitor out) for the whole deadline: at
/// most those accepted before the pressure began keep theirs (Apache's `mod_reqtimeout` idea).
pub(crate) const PRESSED_HEAD_DEADLINE: Duration = Duration::from_secs(3);

/// A visitor connection the limits took on: its places, and how long it has to send its
/// request head or ClientHello.
pub(crate) struct Admitted {
    pub(crate) ticket: Ticket,
    pub(crate) head_deadline: Duration,
}

impl Edge {
    /// Admits a visitor connection from `peer` (see `warren-admit`).
    pub(crate) fn admit(&self, peer: SocketAddr) -> Result<Admitted, Refusal> {
        let ticket = self.admission.admit(peer.ip())?;
        let pressed = self.admission.pending().pressed();
        let configured = self.settings.header_read_timeout;
        Ok(Admitted {
            ticket,
            head_deadline: if pressed {
                configured.min(PRESSED_HEAD_DEADLINE)
            } else {
                configured
            },
        })
    }
}

/// 429 for an IP over its count of concurrent connections.
pub(crate) const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 75\r\n\r\n\
Too many connections from your address at once. Close some and try again.\r\n";

/// 503 while the broker holds as many connections without a request as it allows.
pub(crate) const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 66\r\n\r\n\
The server is handling too many new connections. Try again soon.\r\n";

/// 429 for an IP opening connections faster than the rate, told when to come back.
fn too_fast(wait_secs: u64) -> Vec<u8> {
    let body = "Too many new connections from your address. Slow down and try again.\r\n";
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nretry-after: {wait_secs}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn limit_of(why: Refusal) -> Limit {
    match why {
        Refusal::PerIp => Limit::VisitorConnectionsPerIp,
        Refusal::Pending => Limit::PendingVisitors,
        Refusal::Rate(_) => Limit::VisitorConnectionRate,
    }
}

/// Counts a refused visitor connection, and logs it now and then.
pub(crate) fn count(metrics: &Metrics, logged: &Throttle, peer: SocketAddr, why: Refusal) {
    let limit = limit_of(why);
    metrics.limit_hit(limit);
    if let Some(quiet) = logged.hit() {
        warn!(%peer, limit = limit.as_str(), refused_since_last_line = quiet, "visitor connection refused");
    }
}

/// Counts a refused visitor connection; on plain HTTP (`answer`) writes the response. The
/// caller drops the socket, which closes it.
pub(crate) fn refuse(
    edge: &Edge,
    socket: &TcpStream,
    peer: SocketAddr,
    why: Refusal,
    answer: bool,
) {
    count(&edge.metrics, &edge.refusals_logged, peer, why);
    if !answer {
        return;
    }
    let _ = match why {
        Refusal::PerIp => socket.try_write(TOO_MANY_CONNECTIONS),
        Refusal::Pending => socket.try_write(BUSY),
        Refusal::Rate(wait) => socket.try_write(&too_fast(wait.as_secs().max(1))),
    };
    // What the visitor already sent is read away, so that the close is a FIN and not a reset
    // that could make its TCP discard our answer unread.
    let mut sink = [0u8; 1024];
    let _ = socket.try_read(&mut sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_responses_have_the_right_length() {
        for bytes in [TOO_MANY_CONNECTIONS, BUSY, &too_fast(3)[..]] {
            let text = std::str::from_utf8(bytes).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("head");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{text}"
            );
            assert!(head.contains("retry-after: "), "{text}");
        }
    }
}
