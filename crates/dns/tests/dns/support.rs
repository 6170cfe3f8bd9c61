//! Shared test helpers: a real DNS client (hickory) over UDP or TCP, `kdig`, polling.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// How a query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// Sends one query with hickory's DNS client and returns the whole response message.
pub async fn query(
    server: SocketAddr,
    transport: Transport,
    name: &str,
    rtype: RecordType,
) -> Message {
    try_query(server, transport, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("{transport:?} query for {name} to {server} failed: {e}"))
}

/// Like [`query`], returning the client's error instead of failing the test.
pub async fn try_query(
    server: SocketAddr,
    transport: Transport,
    name: &str,
    rtype: RecordType,
) -> Result<Message, hickory_net::NetError> {
    let provider = TokioRuntimeProvider::default();
    let timeout = Duration::from_secs(5);
    let mut client = match transport {
        Transport::Udp => {
            let stream = UdpClientStream::builder(server, provider)
                .with_timeout(Some(timeout))
                .build();
            let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(bg);
            client
        }
        Transport::Tcp => {
            let (connect, sender) = TcpClientStream::new(server, None, Some(timeout), provider);
            let stream = connect.await?;
            let (client, bg) =
                Client::<TokioRuntimeProvider>::with_timeout(stream, sender, timeout);
            tokio::spawn(bg);
            client
        }
    };
    let name = Name::from_ascii(name).expect("test name");
    let response = client.query(name, DNSClass::IN, rtype).await?;
    Ok(response.into_message())
}

/// The answer section's data as sorted strings ("192.0.2.1", "\"txt value\"").
pub fn answer_strings(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => t
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .concat(),
            other => other.to_string(),
        })
        .collect();
    out.sort();
    out
}

/// Runs `kdig` (Debian package knot-dnsutils) and returns its output.
pub async fn kdig(server: SocketAddr, transport: Transport, name: &str, rtype: &str) -> String {
    let mut cmd = tokio::process::Command::new("kdig");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("+retry=0")
        .arg("+time=5");
    if transport == Transport::Tcp {
        cmd.arg("+tcp");
    }
    let out = cmd
        .arg(name)
        .arg(rtype)
        .output()
        .await
        .expect("kdig is missing: apt-get install -y knot-dnsutils");
    assert!(
        out.status.success(),
        "kdig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
