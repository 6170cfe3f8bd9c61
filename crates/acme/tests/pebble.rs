//! The certificate manager against a real ACME CA (Pebble), one private CA, DNS server and
//! set of ports per test so they run in parallel. Needs the `pebble` binary (Debian package
//! `pebble`, or `PEBBLE=/path/to/pebble`).

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Env, ZONE, eventually, leaf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use warren_acme::{AcmeError, CertManager, ChallengeKind};
use warren_tls::cert_info_der;

/// The challenge type `name`'s stored certificate was validated with.
async fn challenge_of(env: &Env, name: &str) -> Option<String> {
    let row = env.store.certificate(name).await.expect("row");
    row.expect("stored").challenge
}

/// Issues `name` with `kind`, then checks a verified TLS connection gets it.
async fn issue_and_connect(env: &Env, kind: ChallengeKind, name: &str, sni: &str) {
    let manager = env.manager(kind);
    let status = manager
        .ensure(name)
        .await
        .unwrap_or_else(|e| panic!("issue {name}: {e}\n{}", env.pebble.log()));
    assert_eq!(status.name, name);
    assert!(status.last_error.is_none());
    assert!(
        status
            .issuer
            .as_deref()
            .is_some_and(|i| i.contains("Pebble")),
        "{status:?}"
    );
    let not_after = status.not_after.expect("not_after");
    let next = status.next_attempt.expect("renewal scheduled");
    assert!(next > warren_store::now() && next < not_after, "{status:?}");

    let roots = env.pebble.issuing_root().await;
    let tls = env
        .connect(sni, &roots)
        .await
        .expect("verified TLS connection");
    assert_eq!(cert_info_der(&leaf(&tls)).expect("leaf").names, [name]);
    assert!(env.challenges.is_empty(), "challenge answers cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_stores_encrypted_and_serves() {
    let env = Env::start().await;
    let name = format!("chat.{ZONE}");
    env.add_host(&name).await;
    issue_and_connect(&env, ChallengeKind::Http01, &name, &name).await;

    // The key is sealed in the database, and the key file is private.
    let row = env
        .store
        .certificate(&name)
        .await
        .expect("row")
        .expect("stored");
    let sealed = row.private_key.as_deref().expect("key");
    assert!(sealed.starts_with("v1:") && !sealed.contains("PRIVATE KEY"));
    assert_eq!(row.challenge.as_deref(), Some("http-01"));
    let raw = std::fs::read(env.db_url.trim_start_matches("sqlite://")).expect("db file");
    assert!(
        !String::from_utf8_lossy(&raw).contains("PRIVATE KEY"),
        "no plaintext key in the db"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env.key_path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A restart: a fresh CertStore gets the stored certificate back from `load`.
    let fresh = Env::start().await; // other ports; only its empty CertStore is used here
    let manager = warren_acme::CertManager::new(
        env.settings(ChallengeKind::Http01),
        env.store.clone(),
        fresh.certs.clone(),
        fresh.challenges.clone(),
        None,
    );
    assert_eq!(manager.load().await.expect("load"), 1);
    assert_eq!(fresh.certs.names(), [name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_and_serves() {
    let env = Env::start().await;
    let name = format!("alpn.{ZONE}");
    env.add_host(&name).await;
    issue_and_connect(&env, ChallengeKind::TlsAlpn01, &name, &name).await;
    assert_eq!(
        challenge_of(&env, &name).await.as_deref(),
        Some("tls-alpn-01")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_uses_dns01_and_cleans_its_txt_record() {
    let env = Env::start().await;
    // Configured for HTTP-01: the wildcard still goes through DNS-01.
    let name = format!("*.{ZONE}");
    issue_and_connect(
        &env,
        ChallengeKind::Http01,
        &name,
        &format!("anything.{ZONE}"),
    )
    .await;
    assert_eq!(*env.dns.txt_added.lock().expect("lock"), 1);
    assert!(
        env.dns.live_txt.lock().expect("lock").is_empty(),
        "TXT removed"
    );
    assert_eq!(challenge_of(&env, &name).await.as_deref(), Some("dns-01"));
    // One label only: a deeper name is not covered.
    let roots = env.pebble.issuing_root().await;
    assert!(env.connect(&format!("a.b.{ZONE}"), &roots).await.is_err());
}

/// A provider whose API says "done" 4 s before the record answers at the zone's server: the
/// manager asks the CA to validate only once the server answers, so the order succeeds (and
/// took at least the lag). The same provider with the wait turned off (no servers to ask) is
/// validated too early and fails: what the wait is for, and proof this test can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_waits_until_a_late_txt_record_answers() {
    const LAG: Duration = Duration::from_secs(4);
    let env = Env::start().await;
    *env.dns.txt_lag.lock().expect("lock") = LAG;
    let name = format!("*.{ZONE}");
    let manager_with = |servers: Vec<std::net::SocketAddr>| {
        let mut settings = env.settings(ChallengeKind::Dns01);
        settings.propagation.servers = Some(servers);
        settings.propagation.timeout = Duration::from_secs(30);
        CertManager::new(
            settings,
            env.store.clone(),
            env.certs.clone(),
            env.challenges.clone(),
            Some(env.dns.clone() as Arc<dyn warren_dns::DnsProvider>),
        )
    };

    let hasty = manager_with(Vec::new());
    let err = hasty
        .ensure(&name)
        .await
        .expect_err("validated before the record showed");
    assert!(
        matches!(&err, AcmeError::Validation { detail, .. } if detail.contains("TXT")),
        "the CA refused for want of the TXT record: {err:?}"
    );

    let patient = manager_with(vec![env.dns_addr]);
    let started = std::time::Instant::now();
    // The failed order backs off; a forced order goes ahead now.
    let status = patient
        .force_renew(&name)
        .await
        .unwrap_or_else(|e| panic!("issue {name}: {e}\n{}", env.pebble.log()));
    assert!(started.elapsed() >= LAG, "{:?}", started.elapsed());
    assert!(status.last_error.is_none(), "{status:?}");
    assert!(status.not_after.is_some(), "{status:?}");
    assert_eq!(challenge_of(&env, &name).await.as_deref(), Some("dns-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_without_dns_provider_is_an_error_on_record() {
    let env = Env::start().await;
    let manager = warren_acme::CertManager::new(
        env.settings(ChallengeKind::Http01),
        env.store.clone(),
        env.certs.clone(),
        env.challenges.clone(),
        None,
    );
    let name = format!("*.{ZONE}");
    assert!(matches!(
        manager.ensure(&name).await,
        Err(AcmeError::NoDnsProvider(_))
    ));
    let status = manager.status().await.expect("status");
    assert_eq!(status.len(), 1);
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("DNS provider"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_renewal_swaps_the_certificate_and_open_connections_keep_working() {
    let env = Env::start().await;
    let name = format!("renew.{ZONE}");
    env.add_host(&name).await;
    let manager = env.manager(ChallengeKind::Http01);
    let first = manager.ensure(&name).await.expect("issue");
    let roots = env.pebble.issuing_root().await;
    let mut open = env.connect(&name, &roots).await.expect("connect");
    let old_leaf = leaf(&open);

    let renewed = manager.force_renew(&name).await.expect("renew");
    assert!(renewed.last_error.is_none());
    assert!(renewed.not_after >= first.not_after);

    let fresh = env.connect(&name, &roots).await.expect("connect again");
    assert_ne!(
        leaf(&fresh),
        old_leaf,
        "new handshakes get the renewed certificate"
    );
    open.write_all(b"still here")
        .await
        .expect("write on the old connection");
    let mut buf = [0u8; 10];
    open.read_exact(&mut buf)
        .await
        .expect("read on the old connection");
    assert_eq!(&buf, b"still here");
    assert_eq!(env.certs.names(), [name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_is_created_once_and_reused() {
    let env = Env::start().await;
    for host in ["one", "two"] {
        env.add_host(&format!("{host}.{ZONE}")).await;
    }
    env.manager(ChallengeKind::Http01)
        .ensure(&format!("one.{ZONE}"))
        .await
        .expect("first manager");
    let stored = env
        .store
        .acme_account(&env.pebble.directory_url)
        .await
        .expect("get")
        .expect("account stored");
    assert!(
        !stored.credentials.contains("key_pkcs8"),
        "credentials are sealed"
    );
    // A second manager on the same store (a restart) restores the account.
    env.manager(ChallengeKind::Http01)
        .ensure(&format!("two.{ZONE}"))
        .await
        .expect("second manager");
    let again = env
        .store
        .acme_account(&env.pebble.directory_url)
        .await
        .expect("get")
        .expect("account stored");
    assert_eq!(again, stored, "no new account");
    let created = env
        .store
        .events_since(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.action == "acme.account")
        .count();
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_down_records_the_error_backs_off_and_keeps_serving() {
    let mut env = Env::start().await;
    let name = format!("steady.{ZONE}");
    env.add_host(&name).await;
    let manager = env.manager(ChallengeKind::Http01);
    manager.ensure(&name).await.expect("issue");
    let roots = env.pebble.issuing_root().await;
    let served = leaf(&env.connect(&name, &roots).await.expect("connect"));

    env.pebble.stop().await;
    let before = warren_store::now();
    let err = manager.force_renew(&name).await.expect_err("CA is down");
    assert!(matches!(err, AcmeError::Ca(_)), "{err:?}");
    let status = manager.status().await.expect("status");
    let row = status.iter().find(|s| s.name == name).expect("row");
    assert!(row.last_error.is_some(), "{row:?}");
    let next = row.next_attempt.expect("retry scheduled");
    assert!(next >= before + 60, "backoff of at least a minute: {row:?}");
    assert!(
        row.not_after.is_some(),
        "the certificate is still on record"
    );
    let still = leaf(&env.connect(&name, &roots).await.expect("still served"));
    assert_eq!(still, served);

    // A new name fails too, and asking again right away does not go to the CA.
    let other = format!("new.{ZONE}");
    assert!(matches!(
        manager.ensure(&other).await,
        Err(AcmeError::Ca(_))
    ));
    match manager.ensure(&other).await {
        Err(AcmeError::BackingOff { until, .. }) => assert!(until > warren_store::now()),
        other => panic!("expected BackingOff, got {other:?}"),
    }
}

/// The CA is down when the broker starts: the failed order says when it will be retried, and
/// the background task retries then, not a whole retry period later (it used to wait out a
/// second `retry_min` when the recorded time, in whole seconds, came a moment early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_is_retried_when_its_row_says() {
    let mut env = Env::start().await;
    env.pebble.stop().await;
    let name = format!("later.{ZONE}");
    let mut settings = env.settings(ChallengeKind::Http01);
    settings.retry_min = Duration::from_secs(3);
    let manager = env.manager_with(settings);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));
    manager.request(&name, None);
    let first = eventually(30, "the first failure recorded", || async {
        let row = env.store.certificate(&name).await.ok()??;
        row.last_error.as_ref()?;
        Some(row)
    })
    .await;
    let (tried, due) = (
        first.last_attempt.expect("last attempt"),
        first.next_attempt.expect("next attempt"),
    );
    assert_eq!(due - tried, 3, "{first:?}");
    let second = eventually(30, "the retry", || async {
        let row = env.store.certificate(&name).await.ok()??;
        (row.last_attempt? > tried).then_some(row)
    })
    .await;
    let retried = second.last_attempt.expect("last attempt");
    assert!(
        retried <= due + 1,
        "due at {due}, retried at {retried} ({} s late)",
        retried - due
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rejection_is_recorded_and_challenges_are_cleaned() {
    let env = Env::start().await;
    // No A record: Pebble cannot reach us and refuses the authorization.
    let name = format!("ghost.{ZONE}");
    let manager = env.manager(ChallengeKind::Http01);
    let err = manager.ensure(&name).await.expect_err("must fail");
    assert!(matches!(err, AcmeError::Validation { .. }), "{err:?}");
    assert!(env.challenges.is_empty());
    let status = manager.status().await.expect("status");
    assert_eq!(status.len(), 1);
    let s = &status[0];
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains(&name)),
        "{s:?}"
    );
    assert!(
        s.next_attempt.is_some_and(|t| t > warren_store::now()),
        "{s:?}"
    );
    assert!(s.not_after.is_none() && env.certs.names().is_empty());
}

/// Stores `name`'s certificate again as due now, as if two thirds of its lifetime had passed.
async fn make_due(env: &Env, name: &str) {
    let row = env
        .store
        .certificate(name)
        .await
        .expect("row")
        .expect("stored");
    let due = warren_store::NewCertificate {
        name: name.to_owned(),
        chain_pem: row.chain_pem.clone().expect("chain"),
        private_key: row.private_key.clone().expect("key"),
        not_before: row.not_before.expect("nb"),
        not_after: row.not_after.expect("na"),
        issuer: row.issuer.clone().expect("issuer"),
        challenge: "http-01".into(),
        next_attempt: Some(warren_store::now() - 1),
        owner: None,
    };
    env.store
        .put_certificate("test", &due)
        .await
        .expect("make due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_task_works_requests_and_renews_when_due() {
    let env = Env::start().await;
    let name = format!("bg.{ZONE}");
    env.add_host(&name).await;
    let manager = env.manager(ChallengeKind::Http01);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));

    manager.request(&name, None);
    let first = eventually(30, "requested certificate", || async {
        let row = env.store.certificate(&name).await.ok()??;
        row.material()?;
        Some(row)
    })
    .await;
    assert_eq!(env.certs.names(), [name.as_str()]);

    // Make it due now, as if two thirds of its lifetime had passed.
    make_due(&env, &name).await;
    manager.request(&name, None); // wakes the task
    let renewed = eventually(30, "renewal", || async {
        let row = env.store.certificate(&name).await.ok()??;
        (row.chain_pem != first.chain_pem).then_some(row)
    })
    .await;
    assert!(
        renewed
            .next_attempt
            .is_some_and(|t| t > warren_store::now())
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on shutdown")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_file_means_new_account_and_new_certificates() {
    let env = Env::start().await;
    let name = format!("lost.{ZONE}");
    env.add_host(&name).await;
    env.manager(ChallengeKind::Http01)
        .ensure(&name)
        .await
        .expect("issue");
    let before = env
        .store
        .certificate(&name)
        .await
        .expect("get")
        .expect("row");

    // A restart with a different key: nothing stored can be opened.
    let mut settings = env.settings(ChallengeKind::Http01);
    settings.key = warren_acme::KeyCipher::from_bytes(&[42; 32]).expect("key");
    let certs = std::sync::Arc::new(warren_tls::CertStore::new());
    let manager = warren_acme::CertManager::new(
        settings,
        env.store.clone(),
        certs.clone(),
        env.challenges.clone(),
        None,
    );
    assert_eq!(manager.load().await.expect("load"), 0, "unusable, skipped");
    manager.ensure(&name).await.expect("re-ordered");
    assert_eq!(certs.names(), [name.as_str()]);
    let after = env
        .store
        .certificate(&name)
        .await
        .expect("get")
        .expect("row");
    assert_ne!(after.chain_pem, before.chain_pem);
    let accounts = env
        .store
        .events_since(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.action == "acme.account")
        .count();
    assert_eq!(accounts, 2, "a new account replaced the unreadable one");
}

/// A manager over `env` with a small weekly order budget, its background task running.
fn budgeted(
    env: &Env,
    per_week: u32,
    per_owner_per_week: u32,
) -> (std::sync::Arc<warren_acme::CertManager>, CancellationToken) {
    let mut settings = env.settings(ChallengeKind::Http01);
    settings.budget = warren_acme::OrderBudget {
        per_week,
        per_owner_per_week,
    };
    let manager = std::sync::Arc::new(warren_acme::CertManager::new(
        settings,
        env.store.clone(),
        env.certs.clone(),
        env.challenges.clone(),
        Some(env.dns.clone() as std::sync::Arc<dyn warren_dns::DnsProvider>),
    ));
    let shutdown = CancellationToken::new();
    tokio::spawn(manager.clone().run(shutdown.clone()));
    (manager, shutdown)
}

/// The stored row of `name` once `ready` holds for it.
async fn row_when(
    env: &Env,
    name: &str,
    what: &str,
    ready: impl Fn(&warren_store::Certificate) -> bool,
) -> warren_store::Certificate {
    eventually(60, what, || async {
        let row = env.store.certificate(name).await.ok()??;
        ready(&row).then_some(row)
    })
    .await
}

/// (name, owner) of every `cert.issue` event so far.
async fn issues(env: &Env) -> Vec<(String, Option<i64>)> {
    env.store
        .certificate_issues_since(0)
        .await
        .expect("history")
        .into_iter()
        .map(|e| (e.subject, e.user_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_weekly_budget_a_name_waits_and_says_so_while_renewals_go_ahead() {
    let env = Env::start().await;
    let [a, b, c] = ["one", "two", "three"].map(|h| format!("{h}.{ZONE}"));
    for name in [&a, &b, &c] {
        env.add_host(name).await;
    }
    let (manager, shutdown) = budgeted(&env, 2, 1);
    manager.request(&a, Some(1));
    manager.request(&b, Some(2));
    manager.request(&c, Some(3));

    let issued = |r: &warren_store::Certificate| r.material().is_some();
    let first = row_when(&env, &a, "first certificate", issued).await;
    row_when(&env, &b, "second certificate", issued).await;
    let waiting = row_when(&env, &c, "third name recorded as waiting", |r| {
        r.last_error.is_some()
    })
    .await;
    let status = warren_acme::CertStatus::from(&waiting);
    assert!(status.waiting_for_budget(), "{status:?}");
    let error = status.last_error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(warren_acme::BUDGET_WAIT) && error.contains("broker's 2 certificates"),
        "{error}"
    );
    // Its next look is when the first issuance leaves the 7-day window.
    let frees = first.last_attempt.expect("issued at") + warren_acme::WINDOW;
    let next = status.next_attempt.expect("next look");
    assert!((frees - 5..=frees + 5).contains(&next), "{next} vs {frees}");
    // Nothing was asked of the CA for it, and it is not served.
    assert!(waiting.material().is_none() && waiting.last_attempt.is_none());
    let mut served = env.certs.names();
    served.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(served, expected);
    assert_eq!(
        issues(&env).await,
        [(a.clone(), Some(1)), (b.clone(), Some(2))],
        "each issuance charged to its owner"
    );

    // The budget is the store's: a restarted manager still holds the third name back.
    let mut small = env.settings(ChallengeKind::Http01);
    small.budget = warren_acme::OrderBudget {
        per_week: 2,
        per_owner_per_week: 1,
    };
    let restarted = warren_acme::CertManager::new(
        small,
        env.store.clone(),
        env.certs.clone(),
        env.challenges.clone(),
        None,
    );
    match restarted.ensure(&c).await {
        Err(AcmeError::OverBudget { name, until, .. }) => {
            assert_eq!(name, c);
            assert!((frees - 5..=frees + 5).contains(&until));
        }
        other => panic!("expected OverBudget, got {other:?}"),
    }

    // A renewal is not held back by the full budget (nor by its owner's used share).
    let due = warren_store::NewCertificate {
        name: a.clone(),
        chain_pem: first.chain_pem.clone().expect("chain"),
        private_key: first.private_key.clone().expect("key"),
        not_before: first.not_before.expect("nb"),
        not_after: first.not_after.expect("na"),
        issuer: first.issuer.clone().expect("issuer"),
        challenge: "http-01".into(),
        next_attempt: Some(warren_store::now() - 1),
        owner: Some(1),
    };
    env.store
        .put_certificate("test", &due)
        .await
        .expect("make due");
    manager.request(&a, Some(1)); // wakes the task
    let renewed = row_when(&env, &a, "renewal past the budget", |r| {
        r.chain_pem != first.chain_pem
    })
    .await;
    assert_eq!(renewed.owner_id, Some(1));
    assert!(
        env.store
            .certificate(&c)
            .await
            .expect("get")
            .is_some_and(|r| r.material().is_none()),
        "the third name still waits"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_share_waits_while_another_tenant_is_served() {
    let env = Env::start().await;
    let [x, y, z] = ["alice-1", "alice-2", "bob-1"].map(|h| format!("{h}.{ZONE}"));
    for name in [&x, &y, &z] {
        env.add_host(name).await;
    }
    let (alice, bob) = (Some(7), Some(8));
    let (manager, shutdown) = budgeted(&env, 2, 1);
    manager.request(&x, alice);
    manager.request(&y, alice);
    manager.request(&z, bob);

    let issued = |r: &warren_store::Certificate| r.material().is_some();
    row_when(&env, &x, "alice's first name", issued).await;
    let held = row_when(&env, &y, "alice's second name held", |r| {
        r.last_error.is_some()
    })
    .await;
    let error = held.last_error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(warren_acme::BUDGET_WAIT) && error.contains("user 7's share"),
        "{error}"
    );
    assert_eq!(held.owner_id, alice);
    // Queued behind alice's held name, bob's is issued all the same.
    let bobs = row_when(&env, &z, "bob's name", issued).await;
    assert_eq!(bobs.owner_id, bob);
    assert_eq!(issues(&env).await, [(x.clone(), alice), (z.clone(), bob)]);
    assert!(
        env.store
            .certificate(&y)
            .await
            .expect("get")
            .is_some_and(|r| r.material().is_none())
    );
    shutdown.cancel();
}

/// The ARI identifier of a stored chain's leaf, as RFC 9773 §4.1 spells it.
fn ari_id(chain_pem: &str) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem");
    instant_acme::CertificateIdentifier::try_from(&der)
        .expect("an authority key id")
        .to_string()
}

/// Where the CA offers renewal information (RFC 9773), it times renewals: a certificate is
/// next looked at when the CA says to ask again, not at two thirds of its life; a renewal due
/// by our clock waits while the CA's window is ahead; and when the CA moves the window into the
/// past (as before revoking early), the certificate is renewed at the next look. Pebble 2.4
/// takes the renewal's `replaces` without echoing it, which instant-acme refuses: the order is
/// placed again without it (before, that renewal failed at every attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_information_times_renewals_and_a_moved_window_renews_at_once() {
    use harness::ari::{AriCa, Window};
    let env = Env::start().await;
    let name = format!("ari.{ZONE}");
    env.add_host(&name).await;
    let (hour, day) = (3_600, 86_400);
    let now = warren_store::now();
    let ahead = Window {
        start: now + 10 * day,
        end: now + 11 * day,
        retry_after: 6 * hour as u64,
    };
    let ca = AriCa::start(&env.pebble, ahead).await;
    let mut settings = env.settings(ChallengeKind::Http01);
    settings.directory_url = ca.directory_url.clone();
    let manager = env.manager_with(settings);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.clone().run(shutdown.clone()));

    // Issued: the CA is asked about this very certificate, and its answer sets the next look
    // (ask again in 6 h, the window being days ahead) instead of two thirds of its lifetime.
    manager.request(&name, None);
    let first = eventually(30, "the certificate", || async {
        let row = env.store.certificate(&name).await.ok()??;
        row.material()?;
        Some(row)
    })
    .await;
    let id = ari_id(first.chain_pem.as_deref().expect("chain"));
    let next = eventually(10, "the CA asked about it", || async {
        let row = env.store.certificate(&name).await.ok()??;
        (ca.asked().contains(&id)).then_some(row.next_attempt?)
    })
    .await;
    let six_hours = warren_store::now() + 6 * hour;
    assert!(
        (six_hours - 120..=six_hours).contains(&next),
        "next look at {next}, expected about {six_hours} (lifetime ends {:?})",
        first.not_after
    );

    // Due by our clock, but the CA's window is still ahead: asked again, not renewed.
    let asked = ca.asked().len();
    make_due(&env, &name).await;
    manager.request(&name, None); // wakes the task
    let kept = eventually(30, "a second question to the CA", || async {
        let row = env.store.certificate(&name).await.ok()??;
        (ca.asked().len() > asked && row.next_attempt? > warren_store::now()).then_some(row)
    })
    .await;
    assert_eq!(
        kept.chain_pem, first.chain_pem,
        "renewed before the CA's window"
    );

    // The CA moves the window into the past: renewed at the next look, and the CA is then
    // asked about the new certificate.
    let now = warren_store::now();
    ca.set_window(Window {
        start: now - hour,
        end: now - 60,
        retry_after: hour as u64,
    });
    make_due(&env, &name).await;
    manager.request(&name, None);
    let renewed = eventually(30, "the renewal", || async {
        let row = env.store.certificate(&name).await.ok()??;
        (row.chain_pem != first.chain_pem).then_some(row)
    })
    .await;
    let new_id = ari_id(renewed.chain_pem.as_deref().expect("chain"));
    assert_ne!(new_id, id);
    eventually(10, "the CA asked about the new certificate", || async {
        ca.asked().contains(&new_id).then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on shutdown")
        .expect("join");
}
