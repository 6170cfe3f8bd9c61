//! Custom domains on both backends: attach, list, the one-holder rule, checks, cascades.

use warren_store::{DomainCheck, DomainFilter, StoreError};

use super::*;

fn check(state: &str, at: i64, error: Option<&str>) -> DomainCheck {
    DomainCheck {
        state: state.to_owned(),
        verified_at: (state != "pending").then_some(at),
        failing_since: (state == "failing").then_some(at),
        checked_at: at,
        error: error.map(str::to_owned),
    }
}

both!(domains_attach_verify_and_go_with_their_name, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    let bob = s.create_user("cli", "bob", false).await.expect("bob");
    s.reserve("cli", "alice", "chat", "http")
        .await
        .expect("chat");
    s.reserve("cli", "bob", "shop", "http").await.expect("shop");

    let a = s
        .add_domain("ssh:alice", "chat", "app.their.org", "t-a")
        .await
        .expect("attach");
    assert_eq!(
        (
            a.state.as_str(),
            a.reservation.as_str(),
            a.user_id,
            a.kind.as_str()
        ),
        ("pending", "chat", alice.id, "http")
    );
    assert!(matches!(
        s.add_domain("ssh:alice", "chat", "app.their.org", "t-x").await,
        Err(StoreError::DomainTaken(h)) if h == "app.their.org"
    ));
    assert!(matches!(
        s.add_domain("cli", "nope", "x.their.org", "t").await,
        Err(StoreError::NoSuchReservation(_))
    ));
    // Pending is no claim: bob may attach the same name to his reservation.
    let b = s
        .add_domain("ssh:bob", "shop", "app.their.org", "t-b")
        .await
        .expect("pending twice");
    assert_eq!(
        s.list_domains(DomainFilter::Hostname("app.their.org"))
            .await
            .expect("by host")
            .len(),
        2
    );
    assert_eq!(
        s.list_domains(DomainFilter::User(bob.id))
            .await
            .expect("bob's")[0]
            .id,
        b.id
    );

    // Alice's proof arrives first; bob's row can then not become verified.
    let v = s
        .record_domain_check("broker", a.id, &check("verified", 100, None))
        .await
        .expect("verify");
    assert_eq!((v.state.as_str(), v.verified_at), ("verified", Some(100)));
    assert!(matches!(
        s.record_domain_check("broker", b.id, &check("verified", 101, None))
            .await,
        Err(StoreError::DomainTaken(_))
    ));
    let b2 = s
        .record_domain_check("broker", b.id, &check("pending", 102, Some("no TXT")))
        .await
        .expect("still pending");
    assert_eq!(b2.last_error.as_deref(), Some("no TXT"));

    let f = s
        .record_domain_check("broker", a.id, &check("failing", 200, Some("TXT gone")))
        .await
        .expect("fail");
    assert_eq!(
        (f.state.as_str(), f.failing_since, f.last_checked),
        ("failing", Some(200), Some(200))
    );
    let actions: Vec<String> = s
        .events_since(0, 100)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.action.starts_with("domain."))
        .map(|e| format!("{} {}", e.action, e.subject))
        .collect();
    assert_eq!(
        actions,
        [
            "domain.add app.their.org",
            "domain.add app.their.org",
            "domain.verify app.their.org",
            "domain.fail app.their.org"
        ],
        "a check that changes nothing is not audited"
    );

    let gone = s.remove_domain("ssh:bob", b.id).await.expect("remove");
    assert_eq!(gone.reservation, "shop");
    assert!(matches!(
        s.remove_domain("ssh:bob", b.id).await,
        Err(StoreError::NoSuchDomain(_))
    ));
    s.release("cli", "chat").await.expect("release");
    assert!(
        s.list_domains(DomainFilter::All)
            .await
            .expect("all")
            .is_empty(),
        "a released name's domains go with it"
    );
});
