//! RFC 2136 + TSIG against a real Knot DNS server.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use warren_dns::{DnsError, DnsProvider, Rfc2136, Rfc2136Settings, Secret};

use crate::knot::{Key, Knot};

fn provider(knot: &Knot, key: &Key) -> Rfc2136 {
    Rfc2136::new(Rfc2136Settings {
        server: knot.addr,
        zone: knot.zone.clone(),
        key_name: key.name.into(),
        algorithm: key.algorithm.parse().expect("algorithm"),
        secret: Secret::new(key.secret.clone()),
        ttl: 30,
    })
    .expect("valid settings")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

#[tokio::test]
async fn addresses_are_created_updated_and_removed() {
    let knot = Knot::start().await;
    let dns = provider(&knot, &knot.keys[0]);
    let www = knot.fqdn("www");

    dns.set_addresses(&www, &ips(&["192.0.2.1", "2001:db8::1"]))
        .await
        .expect("set");
    dns.set_addresses(&www, &ips(&["192.0.2.1", "2001:db8::1"]))
        .await
        .expect("set twice");
    assert_eq!(
        knot.lookup("www", RecordType::A).await,
        (ResponseCode::NoError, vec!["192.0.2.1".into()])
    );
    assert_eq!(
        knot.lookup("www", RecordType::AAAA).await.1,
        ["2001:db8::1"]
    );

    dns.set_addresses(&www, &ips(&["192.0.2.2", "192.0.2.3"]))
        .await
        .expect("update");
    assert_eq!(
        knot.lookup("www", RecordType::A).await.1,
        ["192.0.2.2", "192.0.2.3"]
    );
    assert!(
        knot.lookup("www", RecordType::AAAA).await.1.is_empty(),
        "AAAA replaced by nothing"
    );

    dns.remove_addresses(&www).await.expect("remove");
    dns.remove_addresses(&www).await.expect("remove twice");
    assert_eq!(
        knot.lookup("www", RecordType::A).await.0,
        ResponseCode::NXDomain,
        "{}",
        knot.log()
    );
}

#[tokio::test]
async fn several_txt_values_coexist() {
    let knot = Knot::start().await;
    // The second key uses hmac-sha512.
    let dns = provider(&knot, &knot.keys[1]);
    let challenge = knot.fqdn("_acme-challenge");
    dns.add_txt(&challenge, "apex-token").await.expect("add");
    dns.add_txt(&challenge, "wildcard-token")
        .await
        .expect("add");
    dns.add_txt(&challenge, "apex-token")
        .await
        .expect("add twice");
    assert_eq!(
        knot.lookup("_acme-challenge", RecordType::TXT).await.1,
        ["apex-token", "wildcard-token"]
    );
    dns.remove_txt(&challenge, "apex-token")
        .await
        .expect("remove");
    assert_eq!(
        knot.lookup("_acme-challenge", RecordType::TXT).await.1,
        ["wildcard-token"]
    );
    dns.remove_txt(&challenge, "wildcard-token")
        .await
        .expect("remove");
    dns.remove_txt(&challenge, "wildcard-token")
        .await
        .expect("remove twice");
    assert_eq!(
        knot.lookup("_acme-challenge", RecordType::TXT).await.0,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn wrong_credentials_and_wrong_zone_are_clear_errors() {
    let knot = Knot::start().await;
    let name = knot.fqdn("x");
    let ip = ips(&["192.0.2.9"]);

    let wrong_secret = Key {
        secret: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        ..copy(&knot.keys[0])
    };
    let err = provider(&knot, &wrong_secret)
        .set_addresses(&name, &ip)
        .await
        .expect_err("bad secret");
    assert!(matches!(err, DnsError::AuthRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("BADSIG"), "{err}");

    let unknown_key = Key {
        name: "nobody",
        ..copy(&knot.keys[0])
    };
    let err = provider(&knot, &unknown_key)
        .add_txt(&name, "v")
        .await
        .expect_err("unknown key");
    assert!(matches!(err, DnsError::AuthRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("BADKEY"), "{err}");

    let err = provider(&knot, &knot.readonly_key)
        .add_txt(&name, "v")
        .await
        .expect_err("no ACL");
    assert!(matches!(err, DnsError::AuthRefused { .. }), "{err:?}");

    let mut other_zone = provider_settings(&knot, &knot.keys[0]);
    other_zone.zone = "not-served.test".into();
    let err = Rfc2136::new(other_zone)
        .expect("valid")
        .add_txt("x.not-served.test", "v")
        .await
        .expect_err("zone not on the server");
    assert!(matches!(err, DnsError::ZoneNotFound { .. }), "{err:?}");

    let err = provider(&knot, &knot.keys[0])
        .add_txt("x.example.org", "v")
        .await
        .expect_err("outside");
    assert!(matches!(err, DnsError::BadInput(_)), "{err:?}");

    assert_eq!(
        knot.lookup("x", RecordType::A).await.0,
        ResponseCode::NXDomain,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_check_proves_the_key_and_changes_nothing() {
    let knot = Knot::start().await;
    let soa = knot.lookup("", RecordType::SOA).await;
    let proven = provider(&knot, &knot.keys[0])
        .check()
        .await
        .expect("a key allowed to update");
    assert!(
        proven.contains(&format!("zone {}", knot.zone)) && proven.contains(knot.keys[0].name),
        "{proven}"
    );
    // The zone's serial did not move: an empty update is no change.
    assert_eq!(knot.lookup("", RecordType::SOA).await, soa);
    let wrong_secret = Key {
        secret: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        ..copy(&knot.keys[0])
    };
    let err = provider(&knot, &wrong_secret)
        .check()
        .await
        .expect_err("bad secret");
    assert!(err.to_string().contains("BADSIG"), "{err}");
    let err = provider(&knot, &knot.readonly_key)
        .check()
        .await
        .expect_err("a key without update rights");
    assert!(matches!(err, DnsError::AuthRefused { .. }), "{err:?}");
}

#[tokio::test]
async fn server_down_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dns = Rfc2136::new(Rfc2136Settings {
        server: port,
        zone: "example.test".into(),
        key_name: "k".into(),
        algorithm: warren_dns::TsigAlgorithm::HmacSha256,
        secret: Secret::new("c2VjcmV0"),
        ttl: 30,
    })
    .expect("valid");
    let err = dns
        .remove_addresses("www.example.test")
        .await
        .expect_err("nobody listening");
    assert!(matches!(err, DnsError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("rfc2136"), "{err}");
}

fn copy(k: &Key) -> Key {
    Key {
        name: k.name,
        algorithm: k.algorithm,
        secret: k.secret.clone(),
    }
}

fn provider_settings(knot: &Knot, key: &Key) -> Rfc2136Settings {
    Rfc2136Settings {
        server: knot.addr,
        zone: knot.zone.clone(),
        key_name: key.name.into(),
        algorithm: key.algorithm.parse().expect("algorithm"),
        secret: Secret::new(key.secret.clone()),
        ttl: 30,
    }
}

/// A server that answers NOERROR without signing must not be believed.
#[tokio::test]
async fn unsigned_success_is_not_believed() {
    use hickory_proto::op::{Message, ResponseCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("len");
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut request).await.expect("request");
        let request = Message::from_vec(&request).expect("a DNS message");
        assert!(request.signature().is_some(), "the update is TSIG-signed");
        let reply = Message::error_msg(request.id, request.op_code, ResponseCode::NoError)
            .to_vec()
            .expect("encode");
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await.expect("write");
    });
    let dns = Rfc2136::new(Rfc2136Settings {
        server: addr,
        zone: "example.test".into(),
        key_name: "k".into(),
        algorithm: warren_dns::TsigAlgorithm::HmacSha256,
        secret: Secret::new("c2VjcmV0"),
        ttl: 30,
    })
    .expect("valid");
    let err = dns
        .add_txt("x.example.test", "v")
        .await
        .expect_err("unsigned answer");
    assert!(matches!(err, DnsError::BadResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("TSIG"), "{err}");
    fake.await.expect("fake server");
}

#[tokio::test]
async fn an_order_waits_until_the_record_shows_at_the_server() {
    use std::time::{Duration, Instant};
    use warren_dns::propagation::wait_for_txt;
    let knot = Knot::start().await;
    let dns = provider(&knot, &knot.keys[0]);
    let servers = dns.authoritative_servers().await;
    assert_eq!(servers, [knot.addr]);
    let fqdn = knot.fqdn("_acme-challenge");
    // Not there: a clear error naming the server and what it holds, after the deadline.
    let err = wait_for_txt(&servers, &fqdn, "token-1", Duration::from_secs(1))
        .await
        .expect_err("no record yet");
    assert!(matches!(err, DnsError::NotVisible { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&knot.addr.to_string()) && err.to_string().contains("[]"),
        "{err}"
    );
    // Added while the wait polls: it returns once the server answers with the value, not
    // before (another value at the name does not count).
    dns.add_txt(&fqdn, "other").await.expect("other value");
    let started = Instant::now();
    let add = {
        let dns = provider(&knot, &knot.keys[0]);
        let fqdn = fqdn.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            dns.add_txt(&fqdn, "token-1").await
        })
    };
    wait_for_txt(&servers, &fqdn, "token-1", Duration::from_secs(20))
        .await
        .expect("seen once added");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    add.await.expect("task").expect("added");
}
