//! One suite, two backends: every test runs on SQLite (a fresh file) and on Postgres (a fresh
//! database on `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), so the
//! two implementations cannot drift apart.

use std::sync::Arc;

use warren_store::{AuditAction, AuditEvent, NewCertificate, NewKey, Store, StoreError};

/// A store on one backend that cleans up after itself.
struct Fixture {
    store: Arc<dyn Store>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some((admin, db)) = self.pg_drop.take() {
            // Best effort: a leftover test database is harmless, and pools close on drop.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        use sqlx::Connection;
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let sql = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                        }
                    });
                }
            });
        }
    }
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("warren.db").display());
    let store = warren_store::open(&url).await.expect("open sqlite");
    Fixture {
        store,
        url,
        _dir: Some(dir),
        pg_drop: None,
    }
}

async fn postgres() -> Fixture {
    use sqlx::Connection;
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = format!("warren_test_{:016x}", rand::random::<u64>());
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("Postgres must be reachable at DATABASE_URL (see README: running the tests)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut c)
        .await
        .expect("create db");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("DATABASE_URL has no database part"),
    };
    let store = warren_store::open(&url).await.expect("open postgres");
    Fixture {
        store,
        url,
        _dir: None,
        pg_drop: Some((admin, db)),
    }
}

fn key(fp: &str) -> NewKey {
    NewKey {
        fingerprint: fp.to_owned(),
        algorithm: "ssh-ed25519".into(),
        public_key: format!("ssh-ed25519 AAAA{fp}"),
        comment: "laptop".into(),
    }
}

fn cert(name: &str, serial: &str) -> NewCertificate {
    NewCertificate {
        name: name.to_owned(),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n"),
        private_key: format!("sealed:{serial}"),
        not_before: 1_000,
        not_after: 2_000,
        issuer: "CN=Test CA".into(),
        challenge: "http-01".into(),
        next_attempt: Some(1_666),
        owner: None,
    }
}

/// Runs `$body` once per backend with `$s` bound to the store (and `$fx` to the fixture).
macro_rules! both {
    ($name:ident, |$fx:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let $fx = super::sqlite().await;
                $body
            }
            #[tokio::test]
            async fn postgres() {
                let $fx = super::postgres().await;
                $body
            }
        }
    };
}

both!(users_are_unique_and_listed, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", true).await.expect("alice");
    assert!(alice.is_admin && !alice.disabled);
    s.create_user("cli", "bob", false).await.expect("bob");
    match s.create_user("cli", "alice", false).await {
        Err(StoreError::UserExists(n)) => assert_eq!(n, "alice"),
        other => panic!("expected UserExists, got {other:?}"),
    }
    let names: Vec<_> = s
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
});

both!(disable_and_enable, |fx| {
    let s = &fx.store;
    s.create_user("cli", "alice", false).await.expect("alice");
    assert!(
        s.set_user_disabled("cli", "alice", true)
            .await
            .expect("disable")
            .disabled
    );
    assert!(
        s.user_by_name("alice")
            .await
            .expect("get")
            .expect("some")
            .disabled
    );
    assert!(
        !s.set_user_disabled("cli", "alice", false)
            .await
            .expect("enable")
            .disabled
    );
    assert!(matches!(
        s.set_user_disabled("cli", "nobody", true).await,
        Err(StoreError::NoSuchUser(_))
    ));
});

both!(keys_have_one_owner, |fx| {
    let s = &fx.store;
    s.create_user("cli", "alice", false).await.expect("alice");
    s.create_user("cli", "bob", false).await.expect("bob");
    let k = s
        .add_key("cli", "alice", &key("SHA256:aaa"))
        .await
        .expect("add");
    assert_eq!(
        (k.user_name.as_str(), k.comment.as_str()),
        ("alice", "laptop")
    );
    match s.add_key("cli", "bob", &key("SHA256:aaa")).await {
        Err(StoreError::KeyExists { owner, .. }) => assert_eq!(owner, "alice"),
        other => panic!("expected KeyExists, got {other:?}"),
    }
    assert!(matches!(
        s.add_key("cli", "carol", &key("SHA256:ccc")).await,
        Err(StoreError::NoSuchUser(_))
    ));
    s.add_key("cli", "bob", &key("SHA256:bbb"))
        .await
        .expect("bob's");
    let (found, owner) = s
        .key_by_fingerprint("SHA256:bbb")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (found.fingerprint.as_str(), owner.name.as_str()),
        ("SHA256:bbb", "bob")
    );
    assert!(
        s.key_by_fingerprint("SHA256:zzz")
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(s.list_keys(None).await.expect("all").len(), 2);
    assert_eq!(s.list_keys(Some("alice")).await.expect("alice's").len(), 1);
    let removed = s.remove_key("cli", "SHA256:aaa").await.expect("rm");
    assert_eq!(removed.user_name, "alice");
    assert!(matches!(
        s.remove_key("cli", "SHA256:aaa").await,
        Err(StoreError::NoSuchKey(_))
    ));
    assert!(
        s.list_keys(Some("alice"))
            .await
            .expect("alice's")
            .is_empty()
    );
});

both!(reservations_are_exclusive, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    s.create_user("cli", "bob", false).await.expect("bob");
    let r = s
        .reserve("cli", "alice", "chat", "http")
        .await
        .expect("reserve");
    assert_eq!((r.name.as_str(), r.user_name.as_str()), ("chat", "alice"));
    // Idempotent for the holder.
    assert_eq!(
        s.reserve("cli", "alice", "chat", "http")
            .await
            .expect("again")
            .id,
        r.id
    );
    match s.reserve("cli", "bob", "chat", "http").await {
        Err(StoreError::NameTaken { owner_id, .. }) => assert_eq!(owner_id, alice.id),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert_eq!(
        s.reservation("chat")
            .await
            .expect("get")
            .expect("held")
            .user_id,
        alice.id
    );
    assert_eq!(
        s.list_reservations(Some("bob")).await.expect("bob's").len(),
        0
    );
    s.release("cli", "chat").await.expect("release");
    assert!(matches!(
        s.release("cli", "chat").await,
        Err(StoreError::NoSuchReservation(_))
    ));
    s.reserve("cli", "bob", "chat", "http")
        .await
        .expect("now bob's");
});

both!(every_mutation_is_audited_in_order, |fx| {
    let s = &fx.store;
    assert_eq!(s.last_event_id().await.expect("empty"), 0);
    s.create_user("cli", "alice", false).await.expect("alice");
    let mark = s.last_event_id().await.expect("mark");
    s.add_key("cli", "alice", &key("SHA256:aaa"))
        .await
        .expect("key");
    s.reserve("ssh:alice", "alice", "chat", "http")
        .await
        .expect("reserve");
    s.set_user_disabled("cli", "alice", true)
        .await
        .expect("disable");
    s.record(&AuditEvent::new(
        "ssh:alice",
        AuditAction::TunnelBind,
        "chat",
        None,
    ))
    .await
    .expect("record");
    // A failed mutation leaves no event.
    assert!(s.reserve("cli", "nobody", "x", "http").await.is_err());
    let events = s.events_since(mark, 100).await.expect("tail");
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["key.add", "name.reserve", "user.disable", "tunnel.bind"]
    );
    assert_eq!(events[1].actor, "ssh:alice");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.events_since(mark, 2).await.expect("limited").len(), 2);
});

both!(data_survives_reopen, |fx| {
    let s = &fx.store;
    s.create_user("cli", "alice", false).await.expect("alice");
    s.add_key("cli", "alice", &key("SHA256:aaa"))
        .await
        .expect("key");
    s.reserve("cli", "alice", "chat", "http")
        .await
        .expect("reserve");
    let again = warren_store::open(&fx.url)
        .await
        .expect("reopen (migrations are idempotent)");
    assert_eq!(again.list_users().await.expect("users").len(), 1);
    assert_eq!(again.list_keys(None).await.expect("keys").len(), 1);
    assert_eq!(
        again
            .reservation("chat")
            .await
            .expect("res")
            .expect("held")
            .user_name,
        "alice"
    );
});

both!(concurrent_writers_do_not_fail, |fx| {
    let s = &fx.store;
    s.create_user("cli", "alice", false).await.expect("alice");
    // Two handles (two pools, like the server and the CLI) writing at once.
    let other = warren_store::open(&fx.url).await.expect("second handle");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let st = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            st.reserve("cli", "alice", &format!("name{i}"), "http")
                .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("reserve");
    }
    assert_eq!(s.list_reservations(None).await.expect("list").len(), 20);
});

both!(acme_account_is_one_per_directory, |fx| {
    let s = &fx.store;
    let dir = "https://acme.example/dir";
    assert!(s.acme_account(dir).await.expect("get").is_none());
    let a = s
        .put_acme_account("acme", dir, "sealed-1")
        .await
        .expect("put");
    assert_eq!(a.credentials, "sealed-1");
    let b = s
        .put_acme_account("acme", dir, "sealed-2")
        .await
        .expect("replace");
    assert_eq!((b.id, b.credentials.as_str()), (a.id, "sealed-2"));
    s.put_acme_account("acme", "https://other/dir", "x")
        .await
        .expect("other CA");
    let got = s.acme_account(dir).await.expect("get").expect("stored");
    assert_eq!(got, b);
    let actions: Vec<_> = s
        .events_since(0, 10)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["acme.account"; 3]);
});

both!(certificates_upsert_list_delete, |fx| {
    let s = &fx.store;
    assert!(
        s.certificate("chat.example.com")
            .await
            .expect("get")
            .is_none()
    );
    let first = s
        .put_certificate("acme", &cert("chat.example.com", "one"))
        .await
        .expect("put");
    assert_eq!(
        first.material(),
        Some((cert("x", "one").chain_pem.as_str(), "sealed:one"))
    );
    assert_eq!(
        (first.not_after, first.next_attempt),
        (Some(2_000), Some(1_666))
    );
    assert!(first.last_error.is_none() && first.last_attempt.is_some());
    let second = s
        .put_certificate("acme", &cert("chat.example.com", "two"))
        .await
        .expect("replace");
    assert_eq!(second.id, first.id);
    assert_eq!(second.private_key.as_deref(), Some("sealed:two"));
    s.put_certificate("acme", &cert("*.example.com", "wild"))
        .await
        .expect("wildcard");
    let names: Vec<_> = s
        .list_certificates()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["*.example.com", "chat.example.com"]);
    let gone = s
        .delete_certificate("cli", "chat.example.com")
        .await
        .expect("delete");
    assert_eq!(gone.private_key.as_deref(), Some("sealed:two"));
    assert!(matches!(
        s.delete_certificate("cli", "chat.example.com").await,
        Err(StoreError::NoSuchCertificate(_))
    ));
    assert_eq!(s.list_certificates().await.expect("list").len(), 1);
});

both!(certificate_failures_keep_the_certificate, |fx| {
    let s = &fx.store;
    // A first order that fails leaves a row without a certificate.
    let failed = s
        .record_certificate_failure("new.example.com", None, "connection refused", 5_000)
        .await
        .expect("record");
    assert!(failed.material().is_none());
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    assert_eq!(failed.next_attempt, Some(5_000));
    // A renewal that fails keeps the certificate being served.
    s.put_certificate("acme", &cert("chat.example.com", "one"))
        .await
        .expect("put");
    let row = s
        .record_certificate_failure("chat.example.com", None, "rate limited", 9_000)
        .await
        .expect("record");
    assert_eq!(row.private_key.as_deref(), Some("sealed:one"));
    assert_eq!(row.not_after, Some(2_000));
    assert_eq!(
        (row.last_error.as_deref(), row.next_attempt),
        (Some("rate limited"), Some(9_000))
    );
    // Success clears the error.
    let ok = s
        .put_certificate("acme", &cert("new.example.com", "fresh"))
        .await
        .expect("issued at last");
    assert!(ok.last_error.is_none());
    assert_eq!(ok.next_attempt, Some(1_666));
});

both!(order_budget_history_and_waits, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    let before = warren_store::now();
    // Issued certificates are charged to their owner, on the row and in the audit log.
    let owned = NewCertificate {
        owner: Some(alice.id),
        ..cert("chat.example.com", "one")
    };
    let row = s.put_certificate("acme", &owned).await.expect("put");
    assert_eq!(row.owner_id, Some(alice.id));
    s.put_certificate("acme", &cert("*.example.com", "wild"))
        .await
        .expect("wildcard");
    // A deleted certificate still counts: the CA counted it.
    s.delete_certificate("cli", "chat.example.com")
        .await
        .expect("delete");
    let issues = s.certificate_issues_since(before).await.expect("history");
    let seen: Vec<_> = issues
        .iter()
        .map(|e| (e.subject.as_str(), e.user_id))
        .collect();
    assert_eq!(
        seen,
        [
            ("chat.example.com", Some(alice.id)),
            ("*.example.com", None)
        ]
    );
    assert!(
        issues
            .iter()
            .all(|e| e.action == "cert.issue" && e.at >= before)
    );
    assert!(
        s.certificate_issues_since(warren_store::now() + 10)
            .await
            .expect("history")
            .is_empty(),
        "only events at or after `since`"
    );

    // A held-back first order: a row without certificate, no attempt recorded.
    let waiting = s
        .record_certificate_wait("new.example.com", Some(alice.id), "waiting", 7_000)
        .await
        .expect("wait");
    assert!(waiting.material().is_none() && waiting.last_attempt.is_none());
    assert_eq!(
        (
            waiting.last_error.as_deref(),
            waiting.next_attempt,
            waiting.owner_id
        ),
        (Some("waiting"), Some(7_000), Some(alice.id))
    );
    // After a failure, a wait keeps the failure's attempt time (the backoff's base).
    let failed = s
        .record_certificate_failure("new.example.com", Some(alice.id), "refused", 8_000)
        .await
        .expect("failure");
    let again = s
        .record_certificate_wait("new.example.com", Some(alice.id), "waiting", 9_000)
        .await
        .expect("wait");
    assert_eq!(again.last_attempt, failed.last_attempt);
    assert_eq!(again.next_attempt, Some(9_000));
    // Renewal information moves the next look only.
    let moved = s
        .reschedule_certificate("new.example.com", 12_000)
        .await
        .expect("reschedule")
        .expect("row");
    assert_eq!(moved.next_attempt, Some(12_000));
    assert_eq!(
        (
            moved.last_attempt,
            moved.last_error.as_deref(),
            moved.owner_id
        ),
        (again.last_attempt, Some("waiting"), Some(alice.id))
    );
    assert!(
        s.reschedule_certificate("nothing.example.com", 1)
            .await
            .expect("reschedule")
            .is_none()
    );
    // Waiting is not an issuance.
    assert_eq!(
        s.certificate_issues_since(before)
            .await
            .expect("history")
            .len(),
        2
    );
});

fn new_token(user_id: i64, name: &str, hash: &str) -> warren_store::NewToken {
    warren_store::NewToken {
        user_id,
        name: name.to_owned(),
        hash: hash.to_owned(),
        hint: "wrn_abcd".into(),
        scope: "write".into(),
        expires_at: Some(9_999_999_999),
    }
}

both!(accounts_passwords_quotas_and_tokens, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    let root = s.create_user("cli", "root", true).await.expect("root");
    assert!(!s.admin_has_password().await.expect("q"));
    assert!(matches!(
        s.password_of("alice").await.expect("q"),
        Some((_, None))
    ));
    s.set_password("cli", "root", Some("$argon2id$x"))
        .await
        .expect("set");
    assert!(s.admin_has_password().await.expect("q"));
    assert!(matches!(
        s.set_password("cli", "nobody", Some("x")).await,
        Err(StoreError::NoSuchUser(_))
    ));
    // Quotas: unset is None (the broker's default), set and cleared.
    assert_eq!(
        s.quotas(alice.id).await.expect("q"),
        warren_store::Quotas::default()
    );
    let q = warren_store::Quotas {
        max_reservations: Some(3),
        max_tunnels: None,
        max_visitor_connections: Some(10),
        max_tunnel_bytes_per_sec: Some(0),
    };
    assert_eq!(s.set_quotas("cli", "alice", &q).await.expect("set"), q);
    assert_eq!(s.quotas(alice.id).await.expect("q"), q);
    // Tokens: unique names per user, looked up by hash, touched, revoked.
    let t = s
        .create_token("cli", &new_token(alice.id, "ci", "h1"))
        .await
        .expect("token");
    assert_eq!(
        (t.name.as_str(), t.scope.as_str(), t.last_used_at),
        ("ci", "write", None)
    );
    assert!(matches!(
        s.create_token("cli", &new_token(alice.id, "ci", "h2"))
            .await,
        Err(StoreError::TokenExists(_))
    ));
    s.create_token("cli", &new_token(root.id, "ci", "h3"))
        .await
        .expect("same name, other user");
    let (found, owner) = s.token_by_hash("h1").await.expect("q").expect("found");
    assert_eq!((found.id, owner.name.as_str()), (t.id, "alice"));
    assert!(s.token_by_hash("nope").await.expect("q").is_none());
    s.touch_token(t.id, 1234).await.expect("touch");
    assert_eq!(
        s.list_tokens(Some(alice.id)).await.expect("list")[0].last_used_at,
        Some(1234)
    );
    assert_eq!(s.list_tokens(None).await.expect("all").len(), 2);
    s.revoke_token("cli", t.id).await.expect("revoke");
    assert!(s.token_by_hash("h1").await.expect("q").is_none());
    assert!(matches!(
        s.revoke_token("cli", t.id).await,
        Err(StoreError::NoSuchToken(_))
    ));
});

both!(login_sessions_signing_keys_and_setup_links, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    for id in ["a", "b"] {
        let session = warren_store::LoginSession {
            id: id.into(),
            user_id: alice.id,
            created_at: 1,
            expires_at: 2,
        };
        s.create_login_session("alice/console", &session)
            .await
            .expect("session");
    }
    assert_eq!(
        s.login_session("a").await.expect("q").map(|x| x.user_id),
        Some(alice.id)
    );
    s.end_login_session("alice/console", "a")
        .await
        .expect("end");
    assert!(s.login_session("a").await.expect("q").is_none());
    assert_eq!(
        s.end_login_sessions_of("cli", alice.id).await.expect("all"),
        1
    );
    assert!(s.login_session("b").await.expect("q").is_none());
    // The first key is kept by every later ensure (another node starting); rotation retires it
    // but keeps it verifying until its sessions expire.
    let first = s.ensure_signing_key("k1").await.expect("ensure");
    assert_eq!(
        s.ensure_signing_key("k2").await.expect("again").id,
        first.id
    );
    let second = s.rotate_signing_key("cli", "k3").await.expect("rotate");
    let keys = s.signing_keys(0).await.expect("keys");
    assert_eq!(
        keys.iter().map(|k| k.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    assert!(keys[0].retired_at.is_none() && keys[1].retired_at.is_some());
    assert_eq!(
        s.signing_keys(i64::MAX).await.expect("keys").len(),
        1,
        "only the live key after the window"
    );
    // A setup link works once, and not after it expired.
    s.create_setup_token("h", 100).await.expect("setup");
    assert!(!s.use_setup_token("h", 100).await.expect("expired"));
    assert!(s.use_setup_token("h", 99).await.expect("use"));
    assert!(!s.use_setup_token("h", 99).await.expect("again"));
});

both!(events_page_newest_first_with_a_cursor, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    s.create_user("cli", "bob", false).await.expect("bob");
    for i in 0..5 {
        s.reserve("cli", "alice", &format!("n{i}"), "http")
            .await
            .expect("reserve");
    }
    let page = s.events_page(Some(alice.id), None, 3).await.expect("page");
    assert_eq!(
        page.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(),
        ["n4", "n3", "n2"]
    );
    let rest = s
        .events_page(Some(alice.id), Some(page[2].id), 10)
        .await
        .expect("rest");
    assert_eq!(
        rest.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(),
        ["n1", "n0", "alice"]
    );
    let all = s.events_page(None, None, 100).await.expect("all");
    assert!(all.iter().any(|e| e.subject == "bob"));
});

both!(the_last_event_about_a_subject, |fx| {
    use warren_store::{AuditAction, AuditEvent};
    let s = &fx.store;
    let dns = [
        AuditAction::DnsSet,
        AuditAction::DnsRemove,
        AuditAction::DnsError,
    ];
    assert_eq!(
        s.last_event_about("chat.example.com", &dns)
            .await
            .expect("none"),
        None
    );
    let mut err = AuditEvent::new("broker", AuditAction::DnsError, "chat.example.com", None);
    err.detail = "set via cloudflare: 403".into();
    s.record(&err).await.expect("error");
    s.record(&AuditEvent::new(
        "broker",
        AuditAction::DnsSet,
        "other.example.com",
        None,
    ))
    .await
    .expect("other");
    s.record(&AuditEvent::new(
        "broker",
        AuditAction::CertIssue,
        "chat.example.com",
        None,
    ))
    .await
    .expect("cert");
    let last = s
        .last_event_about("chat.example.com", &dns)
        .await
        .expect("last")
        .expect("an event");
    assert_eq!(
        (last.kind(), last.detail.as_str()),
        (Some(AuditAction::DnsError), "set via cloudflare: 403")
    );
    s.record(&AuditEvent::new(
        "broker",
        AuditAction::DnsSet,
        "chat.example.com",
        None,
    ))
    .await
    .expect("set");
    let last = s
        .last_event_about("chat.example.com", &dns)
        .await
        .expect("last");
    assert_eq!(last.and_then(|e| e.kind()), Some(AuditAction::DnsSet));
    assert_eq!(
        s.last_event_about("chat.example.com", &[])
            .await
            .expect("no actions"),
        None
    );
    let newest = s.last_events_by_subject(&dns).await.expect("by subject");
    assert_eq!(
        newest
            .iter()
            .map(|e| (e.subject.as_str(), e.kind()))
            .collect::<Vec<_>>(),
        [
            ("other.example.com", Some(AuditAction::DnsSet)),
            ("chat.example.com", Some(AuditAction::DnsSet)),
        ]
    );
});

both!(rules_belong_to_a_reservation_and_are_audited, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    s.reserve("cli", "alice", "chat", "http")
        .await
        .expect("chat");
    assert!(matches!(
        s.put_basic_user("cli", "nope", "u", "h").await,
        Err(StoreError::NoSuchReservation(_))
    ));
    s.put_basic_user("cli", "chat", "bob", "$argon2id$old")
        .await
        .expect("bob");
    // The same user name replaces the hash.
    s.put_basic_user("cli", "chat", "bob", "$argon2id$new")
        .await
        .expect("bob again");
    let imported = vec![
        ("carol".to_owned(), "$2y$05$abc".to_owned()),
        ("dave".to_owned(), "$2b$05$def".to_owned()),
    ];
    assert_eq!(
        s.put_basic_users("cli", "chat", &imported)
            .await
            .expect("import"),
        2
    );
    s.put_ip_rule("cli", "chat", "deny", "10.0.0.0/8")
        .await
        .expect("deny");
    s.put_ip_rule("cli", "chat", "allow", "2001:db8::/32")
        .await
        .expect("allow");
    // One action per CIDR: allowing a denied network flips it.
    s.put_ip_rule("cli", "chat", "allow", "10.0.0.0/8")
        .await
        .expect("flip");
    let r = s.rules("chat").await.expect("rules");
    assert_eq!(r.reservation.user_id, alice.id);
    let users: Vec<_> = r
        .basic_users
        .iter()
        .map(|u| (u.username.as_str(), u.hash.as_str()))
        .collect();
    assert_eq!(
        users,
        [
            ("bob", "$argon2id$new"),
            ("carol", "$2y$05$abc"),
            ("dave", "$2b$05$def")
        ]
    );
    let ips: Vec<_> = r
        .ip_rules
        .iter()
        .map(|i| (i.action.as_str(), i.cidr.as_str()))
        .collect();
    assert_eq!(ips, [("allow", "10.0.0.0/8"), ("allow", "2001:db8::/32")]);

    s.remove_basic_user("cli", "chat", "dave")
        .await
        .expect("rm dave");
    assert!(matches!(
        s.remove_basic_user("cli", "chat", "dave").await,
        Err(StoreError::NoSuchRule(_))
    ));
    s.remove_ip_rule("cli", "chat", "2001:db8::/32")
        .await
        .expect("rm ip");
    assert!(matches!(
        s.remove_ip_rule("cli", "chat", "2001:db8::/32").await,
        Err(StoreError::NoSuchRule(_))
    ));
    assert_eq!(s.all_rules().await.expect("all").len(), 1);
    assert_eq!(s.clear_rules("cli", "chat").await.expect("clear"), 3);
    assert!(s.rules("chat").await.expect("rules").is_empty());
    assert!(s.all_rules().await.expect("all").is_empty());

    let last = s.last_event_id().await.expect("last");
    let changes: Vec<_> = s
        .events_since(0, 100)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.action == "rules.change")
        .map(|e| {
            assert_eq!((e.subject.as_str(), e.user_id), ("chat", Some(alice.id)));
            e.detail
        })
        .collect();
    assert_eq!(
        changes,
        [
            "auth add bob",
            "auth add bob",
            "auth import 2 users",
            "deny 10.0.0.0/8",
            "allow 2001:db8::/32",
            "allow 10.0.0.0/8",
            "auth rm dave",
            "rm 2001:db8::/32",
            "clear 3"
        ]
    );
    assert!(last > 0);

    // Releasing the name drops its rules: the next holder starts clean.
    s.put_ip_rule("cli", "chat", "deny", "0.0.0.0/0")
        .await
        .expect("deny all");
    s.release("cli", "chat").await.expect("release");
    s.create_user("cli", "bob", false).await.expect("bob");
    s.reserve("cli", "bob", "chat", "http")
        .await
        .expect("bob's chat");
    assert!(s.rules("chat").await.expect("rules").is_empty());
});

both!(share_links_redeem_atomically, |fx| {
    let s = &fx.store;
    s.create_user("cli", "alice", false).await.expect("alice");
    s.reserve("cli", "alice", "chat", "http")
        .await
        .expect("chat");
    s.reserve("cli", "alice", "other", "http")
        .await
        .expect("other");
    let now = warren_store::now();
    let share = |hash: &str, expires_at: i64, uses: Option<i64>| warren_store::NewShare {
        token_hash: hash.to_owned(),
        expires_at,
        uses,
    };
    let once = s
        .create_share("ssh:alice", "chat", &share("h1", now + 3600, Some(1)))
        .await
        .expect("once");
    assert_eq!((once.uses_left, once.revoked), (Some(1), false));
    assert_eq!(once.created_by, "ssh:alice");
    // Another name's host cannot redeem it.
    assert_eq!(
        s.redeem_share("other", "h1", now).await.expect("redeem"),
        None
    );
    let used = s.redeem_share("chat", "h1", now).await.expect("redeem");
    assert_eq!(used.map(|l| (l.id, l.uses_left)), Some((once.id, Some(0))));
    assert_eq!(
        s.redeem_share("chat", "h1", now).await.expect("used up"),
        None
    );
    // A used-up link still honours its cookies until it expires.
    let rules = s.rules("chat").await.expect("rules");
    assert!(rules.shares[0].is_live(now));

    // Unlimited, expired and revoked links.
    s.create_share("cli", "chat", &share("h2", now + 3600, None))
        .await
        .expect("unlimited");
    for _ in 0..3 {
        let l = s
            .redeem_share("chat", "h2", now)
            .await
            .expect("redeem")
            .expect("live");
        assert_eq!(l.uses_left, None);
    }
    s.create_share("cli", "chat", &share("h3", now + 10, None))
        .await
        .expect("short");
    assert_eq!(
        s.redeem_share("chat", "h3", now + 10)
            .await
            .expect("expired"),
        None
    );
    let revoked = s
        .create_share("cli", "chat", &share("h4", now + 3600, None))
        .await
        .expect("h4");
    let r = s
        .revoke_share("cli", "chat", revoked.id)
        .await
        .expect("revoke");
    assert!(r.revoked && !r.is_live(now));
    assert_eq!(
        s.redeem_share("chat", "h4", now).await.expect("revoked"),
        None
    );
    assert!(matches!(
        s.revoke_share("cli", "other", revoked.id).await,
        Err(StoreError::NoSuchShare { .. })
    ));

    // N concurrent redemptions of a link with 3 uses: exactly 3 succeed.
    s.create_share("cli", "chat", &share("h5", now + 3600, Some(3)))
        .await
        .expect("h5");
    let tries: Vec<_> = (0..12)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.redeem_share("chat", "h5", now).await })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        if t.await.expect("join").expect("redeem").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 3);
    let redeemed = s
        .events_since(0, 200)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.action == "share.redeem")
        .count();
    assert_eq!(redeemed, 1 + 3 + 3);
});

both!(share_cookie_key_is_made_once, |fx| {
    let s = &fx.store;
    let first = s.share_cookie_key("k1").await.expect("key");
    assert_eq!(first, "k1");
    assert_eq!(s.share_cookie_key("k2").await.expect("key"), "k1");
    let (a, b) = tokio::join!(s.share_cookie_key("k3"), s.share_cookie_key("k4"));
    assert_eq!(
        (a.expect("a"), b.expect("b")),
        ("k1".to_owned(), "k1".to_owned())
    );
});

#[path = "suite/domains.rs"]
mod domains;

both!(a_probe_reads_the_schema_and_changes_nothing, |fx| {
    let schema = warren_store::probe(&fx.url).await.expect("probe");
    assert!(schema.known >= 7, "{schema:?}");
    assert_eq!((schema.pending(), schema.unknown.clone()), (0, vec![]));
});

#[tokio::test]
async fn a_probe_never_creates_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nothing.db");
    let url = format!("sqlite://{}", path.display());
    assert!(warren_store::probe(&url).await.is_err());
    assert!(!path.exists(), "the probe created {}", path.display());
    // An empty file is a database with no schema: every migration pending.
    std::fs::write(&path, b"").expect("empty file");
    let schema = warren_store::probe(&url).await.expect("probe");
    assert_eq!((schema.applied, schema.pending()), (0, schema.known));
}

#[path = "suite/webhooks.rs"]
mod webhooks;

#[path = "suite/nodes.rs"]
mod nodes;
