//! A real Knot DNS server for the RFC 2136 tests: config, zone and TSIG keys in a temp dir,
//! `knotd` on a free 127.0.0.1 port, killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::process::{Child, Command};

use crate::support::{Transport, query};

/// A key the server knows and lets update the zone.
pub struct Key {
    pub name: &'static str,
    pub algorithm: &'static str,
    pub secret: String,
}

pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    pub keys: Vec<Key>,
    /// A key the server knows but whose ACL does not allow updates.
    pub readonly_key: Key,
    child: Child,
    dir: tempfile::TempDir,
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Knot {
    /// Starts knotd for a zone with a unique name and waits until it answers for it.
    pub async fn start() -> Knot {
        let zone = format!("k{:08x}.test", rand::random::<u32>());
        let mut last_log = String::new();
        for _attempt in 0..10 {
            let keys = vec![
                Key {
                    name: "warren-sha256",
                    algorithm: "hmac-sha256",
                    secret: random_secret(),
                },
                Key {
                    name: "warren-sha512",
                    algorithm: "hmac-sha512",
                    secret: random_secret(),
                },
            ];
            let readonly_key = Key {
                name: "reader",
                algorithm: "hmac-sha256",
                secret: random_secret(),
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            write_config(dir.path(), port, &zone, &keys, &readonly_key);
            let log = std::fs::File::create(dir.path().join("knotd.log")).expect("log file");
            let child = Command::new("knotd")
                .arg("-c")
                .arg(dir.path().join("knot.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("knotd is missing: apt-get install -y knot");
            let mut knot = Knot {
                addr,
                zone: zone.clone(),
                keys,
                readonly_key,
                child,
                dir,
            };
            if knot.wait_ready().await {
                return knot;
            }
            // The port was taken between our probe and knotd's bind, or knotd failed: retry.
            last_log = knot.log();
        }
        panic!("knotd did not start; last log:\n{last_log}");
    }

    /// Polls (with a deadline) until knotd answers authoritatively for our zone over TCP and
    /// UDP, or gives up early if it exited.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_status)) = self.child.try_wait() {
                return false;
            }
            if self.answers_for_zone(Transport::Tcp).await
                && self.answers_for_zone(Transport::Udp).await
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn answers_for_zone(&self, transport: Transport) -> bool {
        let probe = tokio::time::timeout(
            Duration::from_secs(2),
            crate::support::try_query(
                self.addr,
                transport,
                &format!("{}.", self.zone),
                RecordType::SOA,
            ),
        )
        .await;
        matches!(probe, Ok(Ok(m)) if m.response_code == ResponseCode::NoError && m.authoritative)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }

    /// The A, AAAA or TXT data at `name` (relative to the zone, "" for the apex) as knotd serves it.
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> (ResponseCode, Vec<String>) {
        let fqdn = self.fqdn(name);
        let m = query(self.addr, Transport::Tcp, &format!("{fqdn}."), rtype).await;
        (m.response_code, crate::support::answer_strings(&m))
    }

    pub fn fqdn(&self, name: &str) -> String {
        if name.is_empty() {
            self.zone.clone()
        } else {
            format!("{name}.{}", self.zone)
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 for both TCP and UDP.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_config(dir: &Path, port: u16, zone: &str, keys: &[Key], readonly: &Key) {
    let d = dir.display();
    let mut conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: \"{d}\"\n\
         log:\n  - target: stderr\n    any: info\n\
         key:\n"
    );
    for k in keys.iter().chain(std::iter::once(readonly)) {
        conf += &format!(
            "  - id: {}\n    algorithm: {}\n    secret: {}\n",
            k.name, k.algorithm, k.secret
        );
    }
    let updaters: Vec<&str> = keys.iter().map(|k| k.name).collect();
    conf += &format!(
        "acl:\n  - id: updaters\n    key: [{}]\n    action: update\n  - id: readers\n    key: {}\n    action: transfer\n",
        updaters.join(", "),
        readonly.name
    );
    conf += &format!(
        "zone:\n  - domain: {zone}\n    storage: \"{d}\"\n    file: \"{zone}.zone\"\n    acl: [updaters, readers]\n    zonefile-sync: -1\n"
    );
    std::fs::write(dir.join("knot.conf"), conf).expect("write knot.conf");
    let zone_file = format!(
        "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n"
    );
    std::fs::write(dir.join(format!("{zone}.zone")), zone_file).expect("write zone");
}
