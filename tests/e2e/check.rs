//! `broker check`: every part reported on its own line, the exit status non-zero when any
//! fails, and nothing changed: no database created, no record written.

use std::process::{Command, Output, Stdio};

use anyhow::Result;

use crate::harness::{Db, TestBroker};
use crate::public::pebble;
use crate::zone::Zone;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The report's line about `what`.
fn line<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(what)))
        .unwrap_or_default()
}

#[test]
fn a_missing_database_fails_the_check_and_is_not_created() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .env_remove("BROKER_CONFIG")
        .env_remove("BROKER_DATABASE_URL")
        .env("BROKER_DATA_DIR", dir.path())
        .current_dir(dir.path())
        .arg("check")
        .stdin(Stdio::null())
        .output()?;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let db = line(&stdout, "database");
    assert!(
        db.starts_with("FAIL") && db.contains("no database there"),
        "{stdout}"
    );
    // The other parts are still reported.
    assert!(line(&stdout, "dns").starts_with("note"), "{stdout}");
    assert!(line(&stdout, "acme").starts_with("note"), "{stdout}");
    assert!(stderr.contains("1 check failed"), "{stderr}");
    assert!(
        !dir.path().join("warren.db").exists(),
        "the check created a database"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_brokers_setup_checks_out() -> Result<()> {
    for db in [Db::Sqlite, Db::Postgres] {
        let broker = TestBroker::start_with(db, &[]).await?;
        let out = broker.cli(&["check"])?;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        let database = line(&stdout, "database");
        assert!(
            database.starts_with("ok") && database.contains("schema current"),
            "{stdout}"
        );
        assert!(stdout.contains("no DNS provider"), "{stdout}");
        // On Postgres, whether the server takes every node's connections: the running broker
        // is this node (same name), so one node counts.
        let pg = line(&stdout, "postgres");
        match db {
            Db::Sqlite => assert_eq!(pg, "", "{stdout}"),
            Db::Postgres => {
                assert!(
                    pg.starts_with("ok")
                        && pg.contains("1 node(s) with database_pool = 16 may open 18 (18 each)"),
                    "{stdout}"
                );
                // A pool no Postgres allows: said, with what to change; the check still passes.
                let out = broker.cli(&["check", "--database-pool", "200000"])?;
                let (stdout, stderr) = text(&out);
                assert!(out.status.success(), "{stdout}{stderr}");
                let pg = line(&stdout, "postgres");
                assert!(
                    pg.starts_with("note")
                        && pg.contains("may open 200002")
                        && pg.contains("raise Postgres's max_connections"),
                    "{stdout}"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dns_key_and_an_unreachable_ca_fail_with_their_reasons() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &[]).await?;
    // A real Knot that knows no TSIG key: the broker's signed update is refused (BADKEY).
    let zone = Zone::start().await?;
    let dead_ca = pebble::free_port();
    let server = zone.addr.to_string();
    let dead = format!("https://{dead_ca}/dir");
    let out = broker.cli(&[
        "--dns-provider",
        "rfc2136",
        "--rfc2136-server",
        &server,
        "--rfc2136-zone",
        &zone.name,
        "--rfc2136-key-name",
        "warren",
        "--rfc2136-secret",
        "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        "--public-ipv4",
        "127.0.0.1",
        "--acme-directory",
        &dead,
        "check",
    ])?;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let dns = line(&stdout, "dns");
    assert!(
        !stdout.is_empty(),
        "no report, the config was refused: {stderr}"
    );
    assert!(
        dns.starts_with("FAIL") && dns.contains("BADKEY") && dns.contains("warren"),
        "{stdout}"
    );
    let acme = line(&stdout, "acme");
    assert!(
        acme.starts_with("FAIL") && acme.contains(&dead_ca.to_string()),
        "{stdout}"
    );
    assert!(line(&stdout, "database").starts_with("ok"), "{stdout}");
    assert!(stderr.contains("2 checks failed"), "{stderr}");
    // The zone is as it was: a check writes nothing.
    assert_eq!(zone.dig(&zone.fqdn("check"), "A").await, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_ca_directory_checks_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pebble = pebble::Pebble::start(
        dir.path(),
        pebble::free_port(),
        pebble::free_port().port(),
        pebble::free_port().port(),
    )
    .await;
    let root_ca = dir.path().join("pebble-ca.pem");
    std::fs::write(&root_ca, &pebble.listener_ca_pem)?;
    let broker = TestBroker::start_with(Db::Sqlite, &[]).await?;
    let root = root_ca.display().to_string();
    let out = broker.cli(&[
        "--acme-directory",
        &pebble.directory_url,
        "--acme-root-ca",
        &root,
        "check",
    ])?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let acme = line(&stdout, "acme");
    assert!(
        acme.starts_with("ok") && acme.contains("answers") && acme.contains("no account yet"),
        "{stdout}"
    );
    // Without the CA's root, the same directory is refused for what it is.
    let out = broker.cli(&["--acme-directory", &pebble.directory_url, "check"])?;
    let (stdout, _) = text(&out);
    assert!(line(&stdout, "acme").starts_with("FAIL"), "{stdout}");
    Ok(())
}
