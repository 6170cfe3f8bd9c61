//! A real browser for the console's tests: Debian's `chromium`, headless, driven over WebDriver
//! (`chromedriver`) by fantoccini. Each test gets its own driver and an empty profile, so
//! tests run in parallel and a "fresh browser context" is simply another `Browser`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{DEADLINE, eventually};

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: kept as artifacts under the target directory.
pub fn artifacts() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Browser tests take turns: a chromium is a few hundred MB and a core's worth of start-up, and
/// several at once on two cores made page loads crawl past the deadlines. Each test holds this
/// for its whole run (it may open more than one browser).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

impl Browser {
    /// Starts chromedriver and a headless chromium session (desktop size).
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// The same, the system in dark mode (`prefers-color-scheme: dark`).
    pub async fn start_dark() -> Result<Self> {
        Self::start_with(&["--force-dark-mode"]).await
    }

    async fn start_with(extra: &[&str]) -> Result<Self> {
        let mut last = None;
        // chromedriver cannot take port 0: take a free port, and try again in the rare case
        // something else took it in between.
        for _ in 0..5 {
            let port = crate::public::pebble::free_port().port();
            let mut driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                // Its own process group, so chromium goes with it (see Drop).
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/test does)")?;
            let up = eventually("chromedriver listens", DEADLINE, || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            })
            .await;
            if let Err(e) = up {
                let _ = driver.kill();
                let _ = driver.wait();
                last = Some(e);
                continue;
            }
            let profile = tempfile::tempdir()?;
            let mut args: Vec<String> = [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--host-resolver-rules=MAP *.localhost 127.0.0.1",
            ]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                json!({ "binary": "/usr/bin/chromium", "args": args }),
            );
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Ok(Self {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    last = Some(anyhow::anyhow!("chromium session: {e}"));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("goto {url}"))
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// The first element matching `css`, once it exists.
    pub async fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        let found = eventually(&format!("an element {css}"), DEADLINE, || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await;
        match found {
            Ok(el) => Ok(el),
            Err(e) => {
                let body = self.body_text().await.unwrap_or_default();
                bail!("{e}; the page says:\n{body}")
            }
        }
    }

    /// Waits until the text of the element matching `css` contains `needle`; returns it.
    pub async fn text_of(&self, css: &str, needle: &str) -> Result<String> {
        let found = eventually(&format!("{css} to say {needle:?}"), DEADLINE, || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            let text = el.text().await.ok()?;
            text.contains(needle).then_some(text)
        })
        .await;
        match found {
            Ok(t) => Ok(t),
            Err(e) => {
                let body = self.body_text().await.unwrap_or_default();
                bail!("{e}; the page says:\n{body}")
            }
        }
    }

    pub async fn body_text(&self) -> Result<String> {
        Ok(self
            .js("return document.body.innerText", vec![])
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Types `value` into the field named `name` inside the form labelled `form`.
    pub async fn fill(&self, form: &str, name: &str, value: &str) -> Result<()> {
        let el = self
            .find(&format!("form[aria-label=\"{form}\"] [name=\"{name}\"]"))
            .await?;
        el.clear().await?;
        el.send_keys(value).await?;
        Ok(())
    }

    /// Clicks the submit button of the form labelled `form`.
    pub async fn submit(&self, form: &str) -> Result<()> {
        self.find(&format!("form[aria-label=\"{form}\"] button[type=submit]"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Clicks the button whose accessible label (or text) is `label`.
    pub async fn click_button(&self, label: &str) -> Result<()> {
        let xpath = format!("//button[@aria-label=\"{label}\" or normalize-space()=\"{label}\"]");
        let el = eventually(&format!("a button {label:?}"), DEADLINE, || async {
            self.client.find(Locator::XPath(&xpath)).await.ok()
        })
        .await?;
        el.click().await?;
        Ok(())
    }

    /// axe-core's serious and critical violations on the current page (none is the goal).
    /// axe-core comes from npm (`scripts/test` installs it); `AXE_CORE_JS` overrides the path.
    pub async fn axe(&self) -> Result<Vec<String>> {
        let path = std::env::var("AXE_CORE_JS").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/warren/npm/node_modules/axe-core/axe.min.js")
        });
        let source = std::fs::read_to_string(&path).with_context(|| {
            format!("axe-core is not installed at {path}: npm install --prefix ~/.cache/warren/npm axe-core (scripts/test does)")
        })?;
        // WebDriver scripts are not subject to the page's CSP: the page itself still is.
        self.js(&format!("{source}\nreturn typeof axe;"), vec![])
            .await?;
        let out = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then((r) => done(
                   r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                     .map((v) => v.impact + ' ' + v.id + ': ' + v.help + ' at ' + v.nodes.map((n) => n.target.join(' ')).join(', '))));",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(out)?)
    }

    /// Resizes the window and waits until the page has laid out at the new width (the resize
    /// reaches the renderer after the WebDriver call returns).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.client.set_window_size(width, height).await?;
        let want = i64::from(width);
        eventually("the page at its new width", DEADLINE, || async {
            let w = self
                .client
                .execute_async(
                    "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(window.innerWidth)));",
                    vec![],
                )
                .await
                .ok()?;
            // The viewport is the window less any frame: within a few pixels of it.
            (w.as_i64().is_some_and(|w| (w - want).abs() <= 20)).then_some(())
        })
        .await
    }

    /// A PNG of the viewport at `width`×`height`, saved as `name`.png under the artifacts.
    pub async fn screenshot(&self, name: &str, width: u32, height: u32) -> Result<PathBuf> {
        self.resize(width, height).await?;
        let png = self.client.screenshot().await?;
        let path = artifacts()?.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the session (chromium quits), then the driver.
    pub async fn close(self) -> Result<()> {
        let r = self.client.clone().close().await;
        drop(self);
        Ok(r?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's whole process group: chromium too, even when a test failed half-way
        // and the session was never closed.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits long enough for a thing that needs a page load and a live update at most.
pub const PAGE: Duration = Duration::from_secs(30);
