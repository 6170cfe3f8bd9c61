//! `broker status`: what the running broker says about itself, asked on its admin listener.
//!
//! Live tunnels exist only in the serving process's memory, so the CLI cannot read them from
//! the database like its other commands: it asks `GET /status` on `admin_addr`. That route
//! needs a bearer token the broker makes at each start and writes, with the address it
//! actually bound (port 0 in tests), to `DATA_DIR/admin-status.json`, readable by the
//! broker's user only. Why not rely on the listener being loopback-only: every local user
//! can reach 127.0.0.1, and the answer names every tenant's tunnels. Whoever can read the data
//! dir can read the database anyway, so the file grants nothing new; and a token made per
//! start needs no rotation and goes stale when the broker stops (the file is removed then).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_store::AuditAction;
use warren_tenants::{Caller, CertView, EventView, Tenants, TunnelView, fit, when};

use crate::config::Config;

/// The file, in the data dir, that tells `broker status` where and how to ask.
const FILE: &str = "admin-status.json";
/// Audit events searched for recent errors.
const ERROR_WINDOW: i64 = 500;
/// Recent errors shown.
const ERRORS: usize = 20;
/// How long `broker status` waits for the broker.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What `DATA_DIR/admin-status.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    /// The admin listener's bound address.
    addr: SocketAddr,
    /// The bearer token `/status` wants.
    token: String,
}

/// What `GET /status` answers.
#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    tunnels: Vec<TunnelView>,
    certificates: Vec<CertView>,
    errors: Vec<EventView>,
}

/// The `/status` route's state.
pub struct Status {
    token: String,
    tenants: Tenants,
    console_label: String,
}

impl Status {
    /// A fresh token for `/status`, written with `addr` to the data dir (mode 0600).
    pub fn publish(
        data_dir: &Path,
        addr: SocketAddr,
        tenants: Tenants,
        console_label: String,
    ) -> Result<Self> {
        let mut rng = rand::rng();
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let path = data_dir.join(FILE);
        let text = serde_json::to_string(&Published {
            addr,
            token: token.clone(),
        })?;
        write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            token,
            tenants,
            console_label,
        })
    }

    async fn report(&self) -> warren_tenants::Result<Report> {
        let op = Caller::operator();
        let tunnels = self
            .tenants
            .tunnels(&op, true)
            .await?
            .into_iter()
            .filter(|t| t.name != self.console_label)
            .collect();
        let certificates = self.tenants.certificates(&op, true).await?;
        let errors = self
            .tenants
            .events(&op, true, None, Some(ERROR_WINDOW))
            .await?
            .items
            .into_iter()
            .filter(|e| is_error(&e.action))
            .take(ERRORS)
            .collect();
        Ok(Report {
            version: env!("CARGO_PKG_VERSION"),
            tunnels,
            certificates,
            errors,
        })
    }
}

/// The audit actions `broker status` shows as recent errors.
fn is_error(action: &str) -> bool {
    matches!(
        action.parse::<AuditAction>(),
        Ok(AuditAction::DnsError | AuditAction::WebhookGiveUp | AuditAction::DomainFail)
    )
}

/// Removes the published file (at a clean stop): a later `broker status` then says no broker
/// runs instead of trying a dead address.
pub fn unpublish(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(FILE));
}

fn write_private(path: &PathBuf, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())
}

/// `GET /status`, for the admin listener.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/status", get(serve_status))
        .with_state(status)
}

async fn serve_status(State(s): State<Arc<Status>>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), s.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            "status: give the token in DATA_DIR/admin-status.json\n",
        )
            .into_response();
    }
    match s.report().await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "status report failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "status: internal error\n",
            )
                .into_response()
        }
    }
}

/// Constant-time equality: the token is compared without telling how much of it matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs `broker status [--json]`.
pub async fn status(config: &Config, json: bool) -> Result<()> {
    let path = config.data_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no running broker: {} is missing (is `broker serve` running with this --data-dir, and admin_addr on?)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let p: Published = serde_json::from_str(&text)
        .with_context(|| format!("{} is not what `broker serve` writes", path.display()))?;
    // Plain HTTP on loopback; reqwest still wants a TLS config, so it gets an empty one on
    // ring (the workspace's provider) instead of pulling in a second crypto library.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(ASK_TIMEOUT)
        .no_proxy()
        .build()?;
    let resp = client
        .get(format!("http://{}/status", p.addr))
        .bearer_auth(&p.token)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "no broker answers at {} ({}): is `broker serve` running?",
                p.addr,
                if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                }
            )
        })?;
    if !resp.status().is_success() {
        bail!(
            "the broker at {} answered {} (a stale {}? restart `broker serve`)",
            p.addr,
            resp.status(),
            path.display()
        );
    }
    let report: Value = resp.json().await.context("the broker's answer")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// The report as text: three tables.
fn render(r: &Value) -> String {
    let empty = Vec::new();
    let list = |k: &str| r[k].as_array().unwrap_or(&empty).clone();
    let mut out = String::new();
    let tunnels = list("tunnels");
    out.push_str(&format!("TUNNELS ({})\n", tunnels.len()));
    out.push_str(&format!(
        "{:<28} {:<5} {:<16} {:<9} {:>9}  URL\n",
        "NAME", "KIND", "OWNER", "SINCE", "REQUESTS"
    ));
    for t in &tunnels {
        out.push_str(&format!(
            "{:<28} {:<5} {:<16} {:<9} {:>9}  {}\n",
            fit(s(t, "name"), 28),
            s(t, "kind"),
            fit(s(t, "user"), 16),
            when(t["since"].as_i64()),
            t["requests"].as_u64().unwrap_or(0),
            match t["node"].as_str() {
                // Held on another node of the cluster: its requests are those seen here.
                Some(node) => format!("{}  (on node {node})", s(t, "url")),
                None => s(t, "url").to_owned(),
            },
        ));
    }
    let certs = list("certificates");
    out.push_str(&format!("\nCERTIFICATES ({})\n", certs.len()));
    out.push_str(&format!("{:<40} {:<10} LAST ERROR\n", "NAME", "EXPIRES"));
    for c in &certs {
        out.push_str(&format!(
            "{:<40} {:<10} {}\n",
            fit(s(c, "name"), 40),
            when(c["not_after"].as_i64()),
            c["last_error"].as_str().map_or("-".into(), |e| fit(e, 60)),
        ));
    }
    let errors = list("errors");
    out.push_str(&format!("\nRECENT ERRORS ({})\n", errors.len()));
    for e in &errors {
        out.push_str(&format!(
            "{:<9} {:<16} {:<28} {}\n",
            when(e["at"].as_i64()),
            s(e, "action"),
            fit(s(e, "subject"), 28),
            fit(s(e, "detail"), 80),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_dns_webhook_and_domain_failures() {
        assert!(is_error("dns.error"));
        assert!(is_error("webhook.give_up"));
        assert!(!is_error("tunnel.bind"));
        assert!(!is_error("nonsense"));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
