//! The Cloudflare provider against the v4 API stand-in.

use std::net::IpAddr;

use warren_dns::{Cloudflare, CloudflareSettings, DnsError, DnsProvider, Secret};

use crate::cloudflare_api::{StandIn, TOKEN, ZONE, start};

fn provider(api: &StandIn) -> Cloudflare {
    Cloudflare::new(CloudflareSettings {
        api_base: api.base.clone(),
        token: Secret::new(TOKEN),
        zone: ZONE.into(),
    })
    .expect("valid settings")
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

fn rec(t: &str, c: &str) -> (String, String) {
    (t.into(), c.into())
}

/// Calls that change something.
fn writes(api: &StandIn) -> usize {
    let b = api.books.lock().expect("lock");
    b.count_calls("POST") + b.count_calls("PUT") + b.count_calls("DELETE")
}

#[tokio::test]
async fn addresses_converge_idempotently() {
    let api = start().await;
    api.books
        .lock()
        .expect("lock")
        .add("A", "other.example.com", "198.51.100.1");
    let dns = provider(&api);

    dns.set_addresses("www.example.com", &ips(&["192.0.2.1", "2001:db8::1"]))
        .await
        .expect("set");
    assert_eq!(
        api.books.lock().expect("lock").at("www.example.com"),
        [rec("A", "192.0.2.1"), rec("AAAA", "2001:db8::1")]
    );
    let after_first = writes(&api);
    dns.set_addresses(
        "WWW.example.com.",
        &ips(&["2001:db8::1", "192.0.2.1", "192.0.2.1"]),
    )
    .await
    .expect("set again");
    assert_eq!(writes(&api), after_first, "second set changes nothing");
    assert_eq!(
        api.books.lock().expect("lock").at("www.example.com").len(),
        2,
        "one record per address"
    );

    dns.set_addresses("www.example.com", &ips(&["192.0.2.2", "2001:db8::1"]))
        .await
        .expect("update");
    {
        let b = api.books.lock().expect("lock");
        assert_eq!(
            b.at("www.example.com"),
            [rec("A", "192.0.2.2"), rec("AAAA", "2001:db8::1")]
        );
        assert_eq!(
            b.count_calls("PUT"),
            1,
            "changed address updates in place: {:?}",
            b.calls
        );
    }

    dns.remove_addresses("www.example.com")
        .await
        .expect("remove");
    dns.remove_addresses("www.example.com")
        .await
        .expect("remove twice");
    let b = api.books.lock().expect("lock");
    assert!(b.at("www.example.com").is_empty());
    assert_eq!(
        b.at("other.example.com"),
        [rec("A", "198.51.100.1")],
        "others untouched"
    );
    assert_eq!(
        b.count_calls("GET /client/v4/zones?"),
        1,
        "zone id looked up once: {:?}",
        b.calls
    );
}

#[tokio::test]
async fn listings_are_followed_across_pages() {
    let api = start().await;
    {
        let mut b = api.books.lock().expect("lock");
        for i in 1..=7 {
            b.add("A", "busy.example.com", &format!("192.0.2.{i}"));
            b.add("A", &format!("n{i}.example.com"), "198.51.100.1");
        }
    }
    let dns = provider(&api);
    dns.set_addresses("busy.example.com", &ips(&["192.0.2.7"]))
        .await
        .expect("set");
    let b = api.books.lock().expect("lock");
    assert_eq!(
        b.at("busy.example.com"),
        [rec("A", "192.0.2.7")],
        "kept the one on the last page"
    );
    assert!(
        b.calls
            .iter()
            .any(|c| c.starts_with("GET") && c.contains("page=4")),
        "{:?}",
        b.calls
    );
    assert_eq!(b.count_calls("DELETE"), 6);
    assert_eq!(b.count_calls("POST"), 0);
    assert_eq!(b.records.len(), 8, "the seven other names are untouched");
}

#[tokio::test]
async fn several_txt_values_coexist() {
    let api = start().await;
    let dns = provider(&api);
    let name = "_acme-challenge.example.com";
    dns.add_txt(name, "apex-token").await.expect("add");
    dns.add_txt(name, "wildcard-token").await.expect("add");
    dns.add_txt(name, "apex-token").await.expect("add twice");
    assert_eq!(
        api.books.lock().expect("lock").at(name),
        [
            rec("TXT", "\"apex-token\""),
            rec("TXT", "\"wildcard-token\"")
        ],
        "quoted, as Cloudflare asks, and not duplicated"
    );
    dns.remove_txt(name, "apex-token").await.expect("remove");
    dns.remove_txt(name, "apex-token")
        .await
        .expect("remove twice");
    assert_eq!(
        api.books.lock().expect("lock").at(name),
        [rec("TXT", "\"wildcard-token\"")]
    );

    // A record stored unquoted (made before Cloudflare's quoting advice) is still recognised.
    api.books.lock().expect("lock").add("TXT", name, "legacy");
    dns.add_txt(name, "legacy").await.expect("already there");
    assert_eq!(api.books.lock().expect("lock").at(name).len(), 2);
    dns.remove_txt(name, "legacy").await.expect("remove legacy");
    dns.remove_txt(name, "wildcard-token")
        .await
        .expect("remove");
    assert!(api.books.lock().expect("lock").at(name).is_empty());
}

#[tokio::test]
async fn wrong_token_is_auth_refused() {
    let api = start().await;
    let dns = Cloudflare::new(CloudflareSettings {
        api_base: api.base.clone(),
        token: Secret::new("wrong"),
        zone: ZONE.into(),
    })
    .expect("valid settings");
    let err = dns
        .add_txt("_acme-challenge.example.com", "v")
        .await
        .expect_err("bad token");
    assert!(matches!(err, DnsError::AuthRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cloudflare")
            && text.contains("Invalid access token")
            && text.contains("9109"),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unknown_zone_and_names_outside_it() {
    let api = start().await;
    let dns = Cloudflare::new(CloudflareSettings {
        api_base: api.base.clone(),
        token: Secret::new(TOKEN),
        zone: "not-mine.example".into(),
    })
    .expect("valid settings");
    let err = dns
        .set_addresses("x.not-mine.example", &ips(&["192.0.2.1"]))
        .await
        .expect_err("no zone");
    assert!(matches!(err, DnsError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("not-mine.example"), "{err}");

    let err = provider(&api)
        .add_txt("x.example.net", "v")
        .await
        .expect_err("outside");
    assert!(matches!(err, DnsError::BadInput(_)), "{err:?}");
}

#[tokio::test]
async fn provider_error_text_is_passed_on() {
    let api = start().await;
    let err = provider(&api)
        .set_addresses("forbidden.example.com", &ips(&["192.0.2.1"]))
        .await
        .expect_err("the API refuses this name");
    assert!(matches!(err, DnsError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string().contains("DNS name is invalid. (code 9000)"),
        "{err}"
    );
}

#[tokio::test]
async fn api_down_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dns = Cloudflare::new(CloudflareSettings {
        api_base: format!("http://{port}/client/v4"),
        token: Secret::new(TOKEN),
        zone: ZONE.into(),
    })
    .expect("valid settings");
    let err = dns
        .remove_addresses("www.example.com")
        .await
        .expect_err("nothing listening");
    assert!(matches!(err, DnsError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("onnect"),
        "says it could not connect: {err}"
    );
}

#[test]
fn token_is_masked_in_debug() {
    let settings = CloudflareSettings::new("super-secret", "example.com");
    let shown = format!("{settings:?}");
    assert!(
        shown.contains("MASKED") && !shown.contains("super-secret"),
        "{shown}"
    );
    assert_eq!(settings.api_base, "https://api.cloudflare.com/client/v4");
    let provider = Cloudflare::new(settings).expect("valid");
    assert!(!format!("{provider:?}").contains("super-secret"));
}
