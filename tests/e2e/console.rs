//! The web console in a real browser (headless Debian chromium over WebDriver): a tenant's
//! whole journey against a real broker, real `ssh -R` and curl; hostile text that must stay
//! text; axe-core on every page; screenshots at desktop and phone widths; a dashboard of a
//! thousand live tunnels.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::browser::{Browser, PAGE, one_at_a_time};
use crate::harness::{Db, Ssh, TestBroker, eventually, keygen, label_of, serve_as};
use crate::origin::Origin;
use crate::rules::{curl, until};

const PASSWORD: &str = "alice's long password";

/// A broker with alice, who has a console password and no key yet; her key pair is made.
async fn with_alice(extra: &[&str]) -> Result<(TestBroker, std::path::PathBuf, String)> {
    let broker = TestBroker::start_with(Db::Sqlite, extra).await?;
    broker.cli_ok(&["user", "add", "alice"])?;
    let out = broker.cli_input(&["user", "passwd", "alice"], &format!("{PASSWORD}\n"))?;
    anyhow::ensure!(out.status.success(), "passwd: {out:?}");
    let key = keygen(broker.dir.path(), "alice", "ed25519")?;
    let console = broker.url("console");
    Ok((broker, key, console))
}

async fn sign_in(b: &Browser, console: &str, name: &str, password: &str) -> Result<()> {
    b.goto(&format!("{console}/")).await?;
    // Not signed in: the dashboard sends the browser to the sign-in page.
    b.find("form[aria-label=\"Sign in\"]").await?;
    b.fill("Sign in", "name", name).await?;
    b.fill("Sign in", "password", password).await?;
    b.submit("Sign in").await?;
    b.text_of("h1", "Live tunnels").await?;
    Ok(())
}

/// `ssh-keygen -lf`'s fingerprint of a public key file.
fn fingerprint(public: &str) -> Result<String> {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-lf", public])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .context("ssh-keygen -lf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_signs_in_adds_a_key_reserves_connects_protects_and_shares() -> Result<()> {
    let _turn = one_at_a_time().await;
    let (broker, key, console) = with_alice(&[]).await?;
    let b = Browser::start().await?;
    sign_in(&b, &console, "alice", PASSWORD).await?;

    // Add a key by pasting it.
    b.goto(&format!("{console}/keys")).await?;
    let public = format!("{}.pub", key.display());
    b.fill(
        "Add an SSH key",
        "public_key",
        std::fs::read_to_string(&public)?.trim(),
    )
    .await?;
    b.submit("Add an SSH key").await?;
    let fp = fingerprint(&public)?;
    b.text_of("table", &fp).await?;

    // Reserve chat.
    b.goto(&format!("{console}/reservations")).await?;
    b.fill("Reserve a name", "name", "chat").await?;
    b.submit("Reserve a name").await?;
    b.text_of("table", "chat.localhost").await?;

    // The dashboard, then a real ssh -R: the row appears without a reload.
    b.goto(&format!("{console}/")).await?;
    b.text_of("main", "No tunnel is live").await?;
    b.js("window.__same_page = 42; return true;", vec![])
        .await?;
    let (_origin, ssh, url) = serve_as(&broker, &key, "chat", "chat's origin").await?;
    assert_eq!(url, broker.url("chat"));
    let row = b
        .text_of("tr[data-name=\"chat\"]", "chat.localhost")
        .await?;
    assert!(row.contains("http"), "{row}");
    assert_eq!(
        b.js("return window.__same_page;", vec![]).await?,
        json!(42),
        "the page was reloaded"
    );
    // Its request counter moves live too.
    assert_eq!(curl(&[], &url).await?.body, "hello from chat's origin");
    eventually("the request counted on the dashboard", PAGE, || async {
        let cells = b
            .js(
                "const r = document.querySelector('tr[data-name=\"chat\"]'); \
                 return r ? [...r.cells].map((c) => c.textContent) : [];",
                vec![],
            )
            .await
            .ok()?;
        (cells.get(4) == Some(&json!("1"))).then_some(())
    })
    .await?;

    // Protect it: basic auth set in the console, checked with curl at the edge.
    b.goto(&format!("{console}/reservations/chat")).await?;
    b.fill("Add a basic auth user", "username", "carol").await?;
    b.fill("Add a basic auth user", "password", "carol's secret")
        .await?;
    b.submit("Add a basic auth user").await?;
    b.text_of(".scroll[aria-label=\"Basic auth users\"]", "carol")
        .await?;
    let asked = until("the edge asks for a password", &url, &[], 401).await?;
    assert!(
        asked
            .headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"chat.localhost\""),
        "{}",
        asked.headers
    );
    let ok = curl(
        &[
            "-u",
            "carol:carol's secret",
            "-H",
            "x-api-key: sekrit-123",
            "-H",
            "cookie: sid=sekrit-456",
        ],
        &url,
    )
    .await?;
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "hello from chat's origin")
    );
    // That request, live in the list; its detail shows the headers, the password not.
    let newest = b.text_of("tr.clickable", "200").await?;
    assert!(newest.contains("curl/"), "{newest}");
    // By keyboard: the row takes focus and opens with Enter.
    let row = b.find("tr.clickable").await?;
    b.js(
        "arguments[0].focus(); return true;",
        vec![serde_json::to_value(&row)?],
    )
    .await?;
    row.send_keys("\u{E007}").await?;
    let detail = b.text_of(".request-detail", "x-api-key").await?;
    let line = |name: &str| {
        detail
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(line("host").contains("chat.localhost"), "{detail}");
    assert!(line("x-api-key").trim_end().ends_with('…'), "{detail}");
    assert!(
        !detail.contains("sekrit") && !detail.contains("Basic"),
        "credentials are shown: {detail}"
    );
    // The filter: 4xx shows the missing page only, and back.
    let missing = curl(&["-u", "carol:carol's secret"], &format!("{url}/missing")).await?;
    assert_eq!(missing.status, 404);
    b.text_of("tr.clickable", "/missing").await?;
    let status = b.find("#req-status").await?;
    status.select_by_value("4").await?;
    let shown = b
        .js(
            "return [...document.querySelectorAll('tr.clickable')].filter((r) => !r.hidden) \
               .map((r) => r.cells[3].textContent);",
            vec![],
        )
        .await?;
    let shown: Vec<String> = serde_json::from_value(shown)?;
    assert!(
        !shown.is_empty() && shown.iter().all(|s| s.starts_with('4')),
        "{shown:?}"
    );
    // The visitors basic auth kept out are in the log too, not only the origin's 404.
    assert!(
        shown.iter().any(|s| s == "401") && shown.iter().any(|s| s == "404"),
        "{shown:?}"
    );
    status.select_by_value("").await?;

    // A custom domain: the exact records to add, and its state.
    b.fill("Attach a custom domain", "domain", "app.alice.example")
        .await?;
    b.submit("Attach a custom domain").await?;
    let records = b
        .text_of(
            ".scroll[aria-label=\"DNS records for app.alice.example\"]",
            "CNAME",
        )
        .await?;
    assert!(
        records.contains("app.alice.example") && records.contains("chat.localhost"),
        "{records}"
    );
    assert!(
        records.contains("TXT") && records.contains("_warren-challenge.app.alice.example"),
        "{records}"
    );
    b.text_of("main", "pending").await?;

    // A share link, shown once with its QR code, opened in a fresh browser.
    b.fill("Create a share link", "expires", "2h").await?;
    b.submit("Create a share link").await?;
    let link = b
        .text_of(".share-url", "/.well-known/warren-share/")
        .await?;
    let qr_drawn = eventually("the QR code drawn", PAGE, || async {
        let w = b
            .js("const i = document.querySelector('img.qr'); return i && i.complete ? i.naturalWidth : 0;", vec![])
            .await
            .ok()?;
        (w.as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    assert!(qr_drawn.is_ok(), "the QR image did not load");
    let stranger = Browser::start().await?;
    stranger.goto(&link).await?;
    let seen = stranger.body_text().await?;
    assert!(seen.contains("hello from chat's origin"), "{seen}");
    stranger.close().await?;
    // Revoked (asked twice), the link opens nothing any more.
    let revoke = b
        .js(
            "const b = [...document.querySelectorAll('button')] \
               .find((b) => (b.getAttribute('aria-label') || '').startsWith('Revoke share')); \
             return b ? b.getAttribute('aria-label') : null;",
            vec![],
        )
        .await?;
    let revoke = revoke.as_str().context("a revoke button")?.to_owned();
    b.click_button(&revoke).await?;
    b.click_button(&format!("Confirm revoke: {revoke}")).await?;
    b.text_of(".scroll[aria-label=\"Share links\"]", "revoked")
        .await?;
    let dead = curl(&[], &link).await?;
    assert_ne!(
        dead.status, 200,
        "a revoked link still opens: {}",
        dead.body
    );
    assert!(!dead.body.contains("hello from chat's origin"));

    // An IP list: a deny rule shows, then goes.
    b.fill("Add an IP rule", "cidr", "10.0.0.0/8").await?;
    b.find("form[aria-label=\"Add an IP rule\"] select[name=\"action\"]")
        .await?
        .select_by_value("deny")
        .await?;
    b.submit("Add an IP rule").await?;
    b.text_of(".scroll[aria-label=\"IP rules\"]", "10.0.0.0/8")
        .await?;
    let rules = broker.cli_ok(&["rules", "chat"])?;
    assert!(rules.contains("10.0.0.0/8"), "{rules}");
    b.click_button("Remove deny 10.0.0.0/8").await?;
    b.click_button("Confirm remove: Remove deny 10.0.0.0/8")
        .await?;
    b.text_of("main", "No IP rules").await?;

    // Screenshots: the dashboard and the reservation page at desktop and phone widths.
    b.goto(&format!("{console}/")).await?;
    b.text_of("tr[data-name=\"chat\"]", "chat").await?;
    b.screenshot("dashboard-desktop", 1280, 900).await?;
    b.screenshot("dashboard-phone", 390, 844).await?;
    b.goto(&format!("{console}/reservations/chat")).await?;
    b.text_of("main", "carol").await?;
    b.screenshot("reservation-phone", 390, 844).await?;
    b.screenshot("reservation-desktop", 1280, 900).await?;
    // No horizontal scrolling of the page itself on a phone (tables scroll in their region).
    b.resize(390, 844).await?;
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await?;
    if overflow.as_i64().unwrap_or(1) > 0 {
        let wide = b
            .js(
                "const w = document.documentElement.clientWidth; \
                 return [w, document.documentElement.scrollWidth, ...[...document.querySelectorAll('body *')] \
                   .filter((e) => e.getBoundingClientRect().right > w + 1 || e.scrollWidth > e.clientWidth + 1) \
                   .slice(0, 12).map((e) => e.tagName + '.' + e.className + ' r=' \
                     + Math.round(e.getBoundingClientRect().right) + ' sw=' + e.scrollWidth + ' cw=' + e.clientWidth + ' ' + (e.textContent || '').slice(0, 30))];",
                vec![],
            )
            .await?;
        anyhow::bail!("the page is wider than a phone by {overflow} px: {wide}");
    }

    // Disconnect from the dashboard: the owner is told, the row goes away live.
    b.resize(1280, 900).await?;
    b.goto(&format!("{console}/")).await?;
    b.find("tr[data-name=\"chat\"]").await?;
    b.click_button("Disconnect chat").await?;
    ssh.line("tunnel chat was disconnected by alice/console")
        .await?;
    b.text_of("main", "No tunnel is live").await?;
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_tenant_or_a_visitor_controls_never_runs() -> Result<()> {
    let _turn = one_at_a_time().await;
    let (broker, key, console) = with_alice(&[]).await?;
    // A key whose comment is markup.
    let public = format!("{}.pub", key.display());
    let line = std::fs::read_to_string(&public)?;
    let mut parts = line.split_whitespace();
    let (alg, body) = (parts.next().context("alg")?, parts.next().context("key")?);
    let evil = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";
    std::fs::write(&public, format!("{alg} {body} {evil}\n"))?;
    broker.cli_ok(&["key", "add", "alice", &public])?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let (_origin, _ssh, url) = serve_as(&broker, &key, "chat", "A").await?;

    let b = Browser::start().await?;
    sign_in(&b, &console, "alice", PASSWORD).await?;
    b.goto(&format!("{console}/keys")).await?;
    b.text_of("main table", "<script>window.__pwned=1</script>")
        .await?;

    // A request whose path and user agent are markup, seen live on the reservation page.
    b.goto(&format!("{console}/reservations/chat")).await?;
    b.find(".live-dot:not(.off)").await?;
    let ua = "<img src=x onerror=\"window.__pwned=3\">";
    curl(
        &["-A", ua],
        &format!("{url}/%3Cscript%3Ewindow.__pwned=4%3C/script%3E"),
    )
    .await?;
    curl(&["-A", ua], &format!("{url}/<b>bold</b>")).await?;
    let text = b
        .text_of("main table", "onerror=\"window.__pwned=3\"")
        .await?;
    assert!(
        text.contains("<b>bold</b>") || text.contains("%3Cscript%3E"),
        "{text}"
    );
    // Its detail too.
    b.find("tr.clickable").await?.click().await?;
    b.text_of(".request-detail", "onerror=").await?;
    let verdict = b
        .js(
            "return { pwned: window.__pwned === undefined ? null : window.__pwned, \
                      scripts: document.querySelectorAll('main script').length, \
                      images: document.querySelectorAll('main img').length, \
                      bold: document.querySelectorAll('main b').length };",
            vec![],
        )
        .await?;
    assert_eq!(
        verdict,
        json!({"pwned": null, "scripts": 0, "images": 0, "bold": 0}),
        "tenant text became markup"
    );
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_accessibility_violation_on_any_page() -> Result<()> {
    let _turn = one_at_a_time().await;
    let (broker, key, console) = with_alice(&[]).await?;
    broker.cli_ok(&["user", "add", "root", "--admin"])?;
    let out = broker.cli_input(&["user", "passwd", "root"], &format!("{PASSWORD}\n"))?;
    anyhow::ensure!(out.status.success(), "passwd: {out:?}");
    broker.cli_ok(&["key", "add", "root", &format!("{}.pub", key.display())])?;
    broker.cli_ok(&["reserve", "root", "chat"])?;
    let (_origin, _ssh, url) = serve_as(&broker, &key, "chat", "A").await?;
    curl(&[], &url).await?;

    let b = Browser::start().await?;
    b.goto(&format!("{console}/login")).await?;
    b.find("form[aria-label=\"Sign in\"]").await?;
    let mut found = Vec::new();
    found.extend(b.axe().await?.into_iter().map(|v| format!("/login: {v}")));
    sign_in(&b, &console, "root", PASSWORD).await?;
    let pages = [
        ("/", "tr[data-name=\"chat\"]"),
        ("/reservations", "main table"),
        ("/reservations/chat", ".live-dot:not(.off)"),
        ("/keys", "main table"),
        ("/tokens", "form"),
        ("/connect", "pre"),
        ("/account", "form"),
        ("/admin/users", "main table"),
        ("/admin/tunnels", "tr[data-name=\"chat\"]"),
        ("/admin/audit", "main table"),
        ("/admin/status", "h1"),
        ("/pair/NOPE-NOPE", ".error"),
    ];
    for (page, ready) in pages {
        b.goto(&format!("{console}{page}")).await?;
        b.find(ready).await?;
        let v = b.axe().await?;
        println!("axe {page}: {} serious or critical", v.len());
        found.extend(v.into_iter().map(|v| format!("{page}: {v}")));
    }
    assert!(found.is_empty(), "axe-core:\n{}", found.join("\n"));
    // The check can fail: an unlabelled image and a nameless button are found.
    b.js(
        "const m = document.querySelector('main'); \
         m.append(document.createElement('img'), document.createElement('button')); return true;",
        vec![],
    )
    .await?;
    let planted = b.axe().await?.join("\n");
    assert!(
        planted.contains("image-alt") && planted.contains("button-name"),
        "axe-core missed planted violations: {planted}"
    );
    b.close().await?;

    // The system's dark mode: the console follows it, and stays readable (axe checks contrast).
    let dark = Browser::start_dark().await?;
    sign_in(&dark, &console, "root", PASSWORD).await?;
    for (page, ready) in [
        ("/", "tr[data-name=\"chat\"]"),
        ("/reservations/chat", ".live-dot:not(.off)"),
    ] {
        dark.goto(&format!("{console}{page}")).await?;
        dark.find(ready).await?;
        let bg = dark
            .js(
                "return getComputedStyle(document.body).backgroundColor;",
                vec![],
            )
            .await?;
        assert_eq!(bg, json!("rgb(20, 24, 22)"), "{page} is not dark");
        let v = dark.axe().await?;
        assert!(v.is_empty(), "axe-core, dark {page}:\n{}", v.join("\n"));
    }
    dark.screenshot("reservation-dark-phone", 390, 844).await?;
    dark.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_of_a_thousand_live_tunnels_loads_and_updates() -> Result<()> {
    let _turn = one_at_a_time().await;
    const TUNNELS: usize = 1000;
    const PER_SESSION: usize = 250;
    let (broker, _, console) = with_alice(&[
        "--max-forwards-per-user",
        "1200",
        "--max-forwards-per-session",
        "300",
    ])
    .await?;
    let origin = Origin::start("many").await?;
    // Random names; each forward names another local port, because OpenSSH keeps only one
    // of several identical `-R 0:…`. Only the first is visited, so only it needs an origin.
    // One key per session, as four machines would: a second session with the same key is
    // the same owner reconnecting, and takes the first one's random names over.
    let mut sessions = Vec::new();
    for s in 0..TUNNELS / PER_SESSION {
        let key = keygen(broker.dir.path(), &format!("alice{s}"), "ed25519")?;
        broker.cli_ok(&["key", "add", "alice", &format!("{}.pub", key.display())])?;
        let forwards: Vec<String> = (0..PER_SESSION)
            .map(|i| match s * PER_SESSION + i {
                0 => format!("0:{}", origin.target()),
                n => format!("0:localhost:{}", 20_000 + n),
            })
            .collect();
        let args: Vec<&str> = forwards.iter().flat_map(|f| ["-R", f.as_str()]).collect();
        sessions.push(Ssh::spawn(&broker, &key, &args)?);
    }
    // OpenSSH's own word for each granted forward ("Allocated port …"): the broker's URL
    // lines are a queue that drops beyond its depth, by design, before the session's channel
    // opens.
    let binding = Instant::now();
    let bound = || {
        sessions
            .iter()
            .map(|s| {
                s.err
                    .lock()
                    .expect("lock")
                    .iter()
                    .filter(|l| l.starts_with("Allocated port "))
                    .count()
            })
            .sum::<usize>()
    };
    eventually(
        "a thousand forwards bound",
        Duration::from_secs(120),
        || async { (bound() >= TUNNELS).then_some(()) },
    )
    .await
    .with_context(|| format!("{} of {TUNNELS} bound", bound()))?;
    let bind_time = binding.elapsed();
    let first = sessions[0].url(0).await?;

    let b = Browser::start().await?;
    sign_in(&b, &console, "alice", PASSWORD).await?;
    // A frame-gap recorder survives nothing across loads, so it starts with the page: the
    // time to a full table is measured from the navigation's start (Navigation Timing).
    let started = Instant::now();
    b.goto(&format!("{console}/")).await?;
    let rows_at_ms = eventually("a thousand rows", PAGE, || async {
        let v = b
            .js(
                "return document.querySelectorAll('tbody tr').length >= arguments[0] ? performance.now() : null;",
                vec![json!(TUNNELS)],
            )
            .await
            .ok()?;
        v.as_f64()
    })
    .await;
    let rows_at_ms = match rows_at_ms {
        Ok(ms) => ms,
        Err(e) => {
            let rows = b
                .js(
                    "return document.querySelectorAll('tbody tr').length;",
                    vec![],
                )
                .await?;
            let text = b.body_text().await?;
            let head: String = text.chars().take(600).collect();
            anyhow::bail!("{e}: {rows} rows; the page says:\n{head}");
        }
    };
    let wall = started.elapsed();
    b.js(
        "window.__gap = 0; let last = performance.now(); \
         const f = (t) => { window.__gap = Math.max(window.__gap, t - last); last = t; requestAnimationFrame(f); }; \
         requestAnimationFrame(f); return true;",
        vec![],
    )
    .await?;
    // Three updates, each a visitor's request, each seen on the page without a reload.
    let name = label_of(&first)?;
    let mut update_ms = Vec::new();
    for n in 1..=3u64 {
        let t = Instant::now();
        assert_eq!(curl(&[], &first).await?.body, "hello from many");
        eventually("the count on the dashboard", PAGE, || async {
            let v = b
                .js(
                    "const r = document.querySelector(`tr[data-name=\"${arguments[0]}\"]`); return r ? r.cells[4].textContent : null;",
                    vec![json!(name)],
                )
                .await
                .ok()?;
            (v == json!(n.to_string())).then_some(())
        })
        .await?;
        update_ms.push(t.elapsed().as_millis());
    }
    let gap = b.js("return window.__gap;", vec![]).await?;
    println!(
        "dashboard with {TUNNELS} live tunnels: full table {rows_at_ms:.0} ms after navigation start \
         ({} ms wall, sign-in excluded); a request reached the page in {update_ms:?} ms; \
         longest frame gap during updates {gap} ms; binding the {TUNNELS} forwards took {} ms",
        wall.as_millis(),
        bind_time.as_millis()
    );
    assert!(
        gap.as_f64().unwrap_or(f64::MAX) < 1000.0,
        "the page stalled for {gap} ms"
    );
    b.close().await?;
    drop(sessions);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_laptop_is_paired_in_the_browser_and_its_forward_comes_up() -> Result<()> {
    let _turn = one_at_a_time().await;
    let (broker, laptop, console) = with_alice(&[]).await?;
    let origin = Origin::start("the new laptop").await?;
    // The laptop's key is unknown to the broker: its session shows a code and a link.
    let ssh = Ssh::spawn(
        &broker,
        &laptop,
        &["-N", "-R", &format!("laptop:80:{}", origin.target())],
    )?;
    let line = ssh.any_line("/pair/").await?;
    let link = line
        .split_whitespace()
        .find(|w| w.contains("/pair/"))
        .context("the pairing link")?
        .to_owned();
    let pid = ssh.pid();

    let b = Browser::start().await?;
    sign_in(&b, &console, "alice", PASSWORD).await?;
    b.goto(&link).await?;
    let fp = fingerprint(&format!("{}.pub", laptop.display()))?;
    b.text_of(".fingerprint", &fp).await?;
    b.text_of("main", "laptop:80").await?;
    b.click_button("Approve: add this key to alice").await?;
    b.text_of("main", "Approved").await?;
    // The waiting forward serves, in the same ssh process.
    let url = broker.url("laptop");
    let seen = until("the paired forward serves", &url, &[], 200).await?;
    assert_eq!(seen.body, "hello from the new laptop");
    assert_eq!(ssh.pid(), pid);
    // The key is alice's now, on her keys page.
    b.goto(&format!("{console}/keys")).await?;
    b.text_of("main table", &fp).await?;
    // The code was used: opening the link again says so.
    b.goto(&link).await?;
    b.find(".error").await?;
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_sets_up_in_the_browser_then_manages_users() -> Result<()> {
    let _turn = one_at_a_time().await;
    let broker = TestBroker::start_with(Db::Sqlite, &[]).await?;
    let token = broker.setup_token.clone().context("the setup link")?;
    let console = broker.url("console");
    let b = Browser::start().await?;
    b.goto(&format!("{console}/setup#{token}")).await?;
    let form = "Set up the first administrator";
    b.fill(form, "name", "root").await?;
    b.fill(form, "password", PASSWORD).await?;
    b.fill(form, "confirm", PASSWORD).await?;
    b.submit(form).await?;
    b.text_of("h1", "Live tunnels").await?;
    b.text_of("nav", "Signed in as root").await?;

    // The commands on the Connect page name this server's real SSH port.
    b.goto(&format!("{console}/connect")).await?;
    let cmd = b.text_of("pre", "ssh ").await?;
    assert_eq!(
        cmd,
        format!(
            "ssh -p {} -N -o ServerAliveInterval=15 -o ServerAliveCountMax=3 \
             -o ExitOnForwardFailure=yes -R 0:localhost:8080 tunnel@localhost",
            broker.ssh_port
        )
    );

    // Create bob, give him a quota, disable him.
    b.goto(&format!("{console}/admin/users")).await?;
    b.fill("Create a user", "name", "bob").await?;
    b.fill("Create a user", "password", "bob's long password")
        .await?;
    b.submit("Create a user").await?;
    b.text_of("main table", "bob").await?;
    b.js(
        "document.querySelector('form[aria-label=\"Quotas of bob\"]').closest('details').open = true; return true;",
        vec![],
    )
    .await?;
    b.fill("Quotas of bob", "max_tunnels", "3").await?;
    b.fill("Quotas of bob", "max_tunnel_bytes_per_sec", "500000")
        .await?;
    b.submit("Quotas of bob").await?;
    b.text_of("main table", "3 tunnels").await?;
    b.text_of("main table", "500 KB/s").await?;
    b.screenshot("users-desktop", 1280, 900).await?;
    b.click_button("Disable bob").await?;
    b.text_of("main table", "disabled").await?;
    let users = broker.cli_ok(&["user", "list"])?;
    let bob = users
        .lines()
        .find(|l| l.contains("bob"))
        .context("bob listed")?;
    assert!(bob.contains("disabled"), "{users}");
    // The setup link worked once.
    let again = Browser::start().await?;
    again.goto(&format!("{console}/setup#{token}")).await?;
    let form_again = "Set up the first administrator";
    again.fill(form_again, "name", "mallory").await?;
    again.fill(form_again, "password", PASSWORD).await?;
    again.fill(form_again, "confirm", PASSWORD).await?;
    again.submit(form_again).await?;
    again.find("form .error:not(:empty)").await?;
    assert!(!broker.cli_ok(&["user", "list"])?.contains("mallory"));
    again.close().await?;
    b.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_shown_once_works_and_stops_when_revoked_and_a_key_is_removed() -> Result<()> {
    let _turn = one_at_a_time().await;
    let (broker, key, console) = with_alice(&[]).await?;
    broker.cli_ok(&["key", "add", "alice", &format!("{}.pub", key.display())])?;
    let b = Browser::start().await?;
    sign_in(&b, &console, "alice", PASSWORD).await?;
    b.goto(&format!("{console}/tokens")).await?;
    b.fill("Create an API token", "name", "ci").await?;
    b.submit("Create an API token").await?;
    let token = b.text_of(".new-token", "wrn_").await?;
    let api = crate::api::Api::of(&broker);
    let me = api.call("GET", "/api/v1/me", crate::api::Cred::Token(&token), None)?;
    assert_eq!((me.status, me.body["name"].as_str()), (200, Some("alice")));
    // Listed by its start only; revoking asks once more, then the token is refused.
    let listed = b.text_of("main table", "ci").await?;
    assert!(
        !listed.contains(&token),
        "the whole token is listed: {listed}"
    );
    b.click_button("Revoke ci").await?;
    b.click_button("Confirm revoke: Revoke ci").await?;
    b.text_of("main", "No tokens.").await?;
    let gone = api.call("GET", "/api/v1/me", crate::api::Cred::Token(&token), None)?;
    assert_eq!(gone.status, 401, "{}", gone.raw);

    // Removing the key: it is gone from the list and from the broker.
    b.goto(&format!("{console}/keys")).await?;
    b.find("main table").await?;
    let label = b
        .js(
            "return document.querySelector('main table button').getAttribute('aria-label');",
            vec![],
        )
        .await?;
    let label = label.as_str().context("remove button")?.to_owned();
    b.click_button(&label).await?;
    b.click_button(&format!("Confirm remove: {label}")).await?;
    b.text_of("main", "No keys yet").await?;
    let keys = broker.cli_ok(&["key", "list"])?;
    assert!(!keys.contains("alice"), "{keys}");

    // Reserve a spare name, then release it (asked twice).
    b.goto(&format!("{console}/reservations")).await?;
    b.fill("Reserve a name", "name", "spare").await?;
    b.submit("Reserve a name").await?;
    b.text_of("main table", "spare").await?;
    b.click_button("Release spare").await?;
    b.click_button("Confirm release: Release spare").await?;
    b.text_of("main", "No reserved names yet").await?;
    let names = broker.cli_ok(&["names"])?;
    assert!(!names.contains("spare"), "{names}");

    // A random name's page: no reservation, but its requests show live.
    let other = keygen(broker.dir.path(), "alice-other", "ed25519")?;
    broker.cli_ok(&["key", "add", "alice", &format!("{}.pub", other.display())])?;
    let origin = Origin::start("R").await?;
    let ssh = Ssh::spawn(&broker, &other, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let name = label_of(&url)?;
    b.goto(&format!("{console}/reservations/{name}")).await?;
    b.text_of("main", "A random name").await?;
    b.find(".live-dot:not(.off)").await?;
    curl(&[], &format!("{url}/seen-here")).await?;
    b.text_of("tr.clickable", "/seen-here").await?;
    b.close().await?;
    Ok(())
}
