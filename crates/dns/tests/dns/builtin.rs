//! The built-in authoritative server, queried by real DNS clients over UDP and TCP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warren_dns::{BuiltinDns, BuiltinSettings, DnsProvider};

use crate::support::{BOTH, Transport, answer_strings, kdig, query};

struct Server {
    dns: Arc<BuiltinDns>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let dns = Arc::new(
        BuiltinDns::new(BuiltinSettings {
            zone: "tunnels.example.com".into(),
            ns: vec!["ns1.tunnels.example.com".into(), "ns2.example.net".into()],
            soa_email: "hostmaster@example.com".into(),
            ttl: 60,
            apex_addrs: vec!["192.0.2.10".parse().expect("ip")],
        })
        .expect("valid settings"),
    );
    let (udp, tcp) = BuiltinDns::bind_sockets("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = udp.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&dns).run(udp, tcp, shutdown.clone()));
    Server {
        dns,
        addr,
        shutdown,
        task,
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

#[tokio::test]
async fn addresses_appear_and_disappear() {
    let s = start().await;
    let name = "chat.tunnels.example.com.";
    for t in BOTH {
        let m = query(s.addr, t, name, RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::NXDomain, "{t:?}");
    }

    let addrs = ips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]);
    s.dns
        .set_addresses("chat.tunnels.example.com", &addrs)
        .await
        .expect("set");
    s.dns
        .set_addresses("CHAT.tunnels.example.com.", &addrs)
        .await
        .expect("set again");
    for t in BOTH {
        let m = query(s.addr, t, name, RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::NoError, "{t:?}");
        assert!(m.authoritative, "{t:?}");
        assert_eq!(answer_strings(&m), ["192.0.2.1", "192.0.2.2"], "{t:?}");
        let m = query(s.addr, t, "Chat.Tunnels.EXAMPLE.com.", RecordType::AAAA).await;
        assert_eq!(
            answer_strings(&m),
            ["2001:db8::1"],
            "{t:?} case-insensitive"
        );
    }

    s.dns
        .set_addresses(name, &ips(&["192.0.2.3"]))
        .await
        .expect("update");
    let m = query(s.addr, Transport::Udp, name, RecordType::A).await;
    assert_eq!(answer_strings(&m), ["192.0.2.3"]);
    let m = query(s.addr, Transport::Udp, name, RecordType::AAAA).await;
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "AAAA gone after update to v4 only");

    s.dns.remove_addresses(name).await.expect("remove");
    s.dns.remove_addresses(name).await.expect("remove twice");
    for t in BOTH {
        let m = query(s.addr, t, name, RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::NXDomain, "{t:?}");
    }
    s.shutdown.cancel();
    s.task.await.expect("join").expect("run");
}

#[tokio::test]
async fn two_txt_values_at_one_name() {
    let s = start().await;
    let name = "_acme-challenge.tunnels.example.com";
    s.dns.add_txt(name, "token-for-apex").await.expect("add");
    s.dns
        .add_txt(name, "token-for-wildcard")
        .await
        .expect("add");
    s.dns
        .add_txt(name, "token-for-apex")
        .await
        .expect("add twice");
    for t in BOTH {
        let m = query(
            s.addr,
            t,
            "_acme-challenge.tunnels.example.com.",
            RecordType::TXT,
        )
        .await;
        assert!(m.authoritative);
        assert_eq!(
            answer_strings(&m),
            ["token-for-apex", "token-for-wildcard"],
            "{t:?}"
        );
    }
    s.dns
        .remove_txt(name, "token-for-apex")
        .await
        .expect("remove");
    let m = query(
        s.addr,
        Transport::Udp,
        "_acme-challenge.tunnels.example.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(answer_strings(&m), ["token-for-wildcard"]);
    s.dns
        .remove_txt(name, "token-for-wildcard")
        .await
        .expect("remove");
    s.dns
        .remove_txt(name, "token-for-wildcard")
        .await
        .expect("remove twice");
    let m = query(
        s.addr,
        Transport::Tcp,
        "_acme-challenge.tunnels.example.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(m.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn apex_soa_ns_and_negative_answers() {
    let s = start().await;
    for t in BOTH {
        let m = query(s.addr, t, "tunnels.example.com.", RecordType::SOA).await;
        assert!(m.authoritative);
        assert_eq!(m.answers.len(), 1);
        let soa = m.answers[0].data.to_string();
        assert!(
            soa.contains("ns1.tunnels.example.com. hostmaster.example.com."),
            "{soa}"
        );

        let m = query(s.addr, t, "tunnels.example.com.", RecordType::NS).await;
        assert_eq!(
            answer_strings(&m),
            ["ns1.tunnels.example.com.", "ns2.example.net."]
        );

        let m = query(s.addr, t, "tunnels.example.com.", RecordType::A).await;
        assert_eq!(
            answer_strings(&m),
            ["192.0.2.10"],
            "apex addresses from settings"
        );

        // NXDOMAIN: SOA in authority, AA set.
        let m = query(s.addr, t, "nobody.tunnels.example.com.", RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::NXDomain);
        assert!(m.authoritative && m.answers.is_empty());
        assert!(
            m.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
        );

        // NODATA: the name exists without that type.
        let m = query(s.addr, t, "tunnels.example.com.", RecordType::MX).await;
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert!(m.authoritative && m.answers.is_empty());
        assert!(
            m.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
        );

        // Outside the zone.
        let m = query(s.addr, t, "example.org.", RecordType::A).await;
        assert_eq!(m.response_code, ResponseCode::Refused);
        assert!(!m.authoritative);
    }
}

#[tokio::test]
async fn wildcard_addresses_cover_every_tunnel_name() {
    let s = start().await;
    s.dns
        .set_addresses("*.tunnels.example.com", &ips(&["192.0.2.80"]))
        .await
        .expect("set");
    let m = query(
        s.addr,
        Transport::Udp,
        "whatever.tunnels.example.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer_strings(&m), ["192.0.2.80"]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "whatever.tunnels.example.com."
    );
}

#[tokio::test]
async fn garbage_does_not_kill_the_server() {
    let s = start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for garbage in [
        &b""[..],
        b"\x00",
        b"not a dns packet at all, just some bytes",
        &[0xff; 600],
    ] {
        sock.send_to(garbage, s.addr).await.expect("send");
    }
    let mut tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    tcp.write_all(b"\x00\x05hello\x00\x02\xff")
        .await
        .expect("write");
    drop(tcp);

    s.dns
        .set_addresses("alive.tunnels.example.com", &ips(&["192.0.2.4"]))
        .await
        .expect("set");
    for t in BOTH {
        let m = query(s.addr, t, "alive.tunnels.example.com.", RecordType::A).await;
        assert_eq!(answer_strings(&m), ["192.0.2.4"], "{t:?}");
    }
    assert!(!s.task.is_finished());
}

#[tokio::test]
async fn kdig_sees_the_same_answers() {
    let s = start().await;
    s.dns
        .set_addresses(
            "web.tunnels.example.com",
            &ips(&["192.0.2.5", "2001:db8::5"]),
        )
        .await
        .expect("set");
    s.dns
        .add_txt("_acme-challenge.web.tunnels.example.com", "one")
        .await
        .expect("txt");
    s.dns
        .add_txt("_acme-challenge.web.tunnels.example.com", "two")
        .await
        .expect("txt");
    for t in BOTH {
        let out = kdig(s.addr, t, "web.tunnels.example.com", "A").await;
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains(" aa"), "AA flag: {out}");
        assert!(out.contains("192.0.2.5"), "{out}");
        let out = kdig(s.addr, t, "_acme-challenge.web.tunnels.example.com", "TXT").await;
        assert!(out.contains("\"one\"") && out.contains("\"two\""), "{out}");
        let out = kdig(s.addr, t, "missing.tunnels.example.com", "A").await;
        assert!(
            out.contains("status: NXDOMAIN") && out.contains("SOA"),
            "{out}"
        );
        let out = kdig(s.addr, t, "web.example.org", "A").await;
        assert!(out.contains("status: REFUSED"), "{out}");
    }
}

#[tokio::test]
async fn shutdown_ends_run_with_tcp_clients_connected() {
    let s = start().await;
    let _idle = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("run returns promptly")
        .expect("join")
        .expect("run ok");
}
