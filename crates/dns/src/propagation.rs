//! Waiting until a TXT record answers at a zone's authoritative servers, so that a DNS-01
//! challenge is handed to the CA only once the CA can see it. A provider's API saying "done"
//! means its primary has the record; secondaries (and Cloudflare's edge) follow seconds to
//! minutes later, and a CA that looks too early fails the order, which costs one of the CA's
//! failed-validation allowances. certbot's DNS plugins sleep a fixed `propagation_seconds`;
//! lego and acme.sh ask the authoritative servers, as this does: a fixed sleep is either too
//! short for a slow secondary or time wasted on every order.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::time::{Instant, timeout};

use crate::DnsError;
use crate::names::parse_name;

/// How long an order waits for its TXT records by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Between two rounds of questions.
const POLL: Duration = Duration::from_secs(2);

/// One question to one server.
const ASK: Duration = Duration::from_secs(5);

/// Waits until each of `servers` answers `fqdn` TXT with `value` among its values, asking
/// every [`POLL`] until `deadline` has passed; then says which server did not, and what it
/// answered. No servers: nothing to wait for.
pub async fn wait_for_txt(
    servers: &[SocketAddr],
    fqdn: &str,
    value: &str,
    deadline: Duration,
) -> Result<(), DnsError> {
    let name = parse_name(fqdn)?;
    let end = Instant::now() + deadline;
    let mut waiting: Vec<SocketAddr> = servers.to_vec();
    let mut last = String::new();
    loop {
        let mut still = Vec::new();
        for server in waiting {
            match txt_values(server, &name).await {
                Ok(values) if values.iter().any(|v| v == value) => {}
                Ok(values) => {
                    last = format!("{server} answers {values:?}");
                    still.push(server);
                }
                Err(e) => {
                    last = format!("{server}: {e}");
                    still.push(server);
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() + POLL > end {
            return Err(DnsError::NotVisible {
                detail: format!(
                    "TXT {fqdn} not seen at {} of {} authoritative servers within {} s ({last})",
                    still.len(),
                    servers.len(),
                    deadline.as_secs()
                ),
            });
        }
        waiting = still;
        tokio::time::sleep(POLL).await;
    }
}

/// The TXT values `server` itself holds for `name` (no recursion), each value's strings joined.
async fn txt_values(server: SocketAddr, name: &Name) -> Result<Vec<String>, String> {
    let mut query = Message::query();
    query.metadata.recursion_desired = false;
    query.add_query(Query::query(name.clone(), RecordType::TXT));
    let request = query.to_vec().map_err(|e| e.to_string())?;
    let answer = timeout(ASK, crate::rfc2136::exchange(server, &request))
        .await
        .map_err(|_| format!("no answer within {} s", ASK.as_secs()))?
        .map_err(|e| e.to_string())?;
    let answer = Message::from_vec(&answer).map_err(|e| e.to_string())?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}
