//! The slice of Cloudflare's v4 API we use: its JSON shapes, the envelope every answer comes in,
//! and how its errors become [`DnsError`]s.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{DnsError, Secret};

pub(super) const KIND: &str = "cloudflare";
/// Cloudflare's largest page of DNS records; it may return fewer, so we follow `total_pages`.
pub(super) const PER_PAGE: u32 = 100;
/// A bound on pages followed, against a server that keeps claiming more.
const MAX_PAGES: u32 = 1000;

/// Error codes that mean "who are you?": a wrong, expired or under-privileged token.
const AUTH_CODES: &[i64] = &[
    9103,  // Unknown X-Auth-Key or X-Auth-Email
    9106,  // Missing X-Auth-Key / X-Auth-Email / Authorization headers
    9109,  // Invalid access token
    10000, // Authentication error
];
/// "An identical record already exists": creating what is there is success (idempotence).
pub(super) const IDENTICAL_RECORD_EXISTS: i64 = 81058;
/// "Record does not exist": deleting what is gone is success (idempotence).
pub(super) const RECORD_DOES_NOT_EXIST: i64 = 81044;

/// Every answer: `{"success":…,"errors":[…],"messages":[…],"result":…,"result_info":…}`.
#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

/// One entry of `errors`.
#[derive(Deserialize, Debug, Clone)]
pub(super) struct ApiMessage {
    pub code: i64,
    pub message: String,
}

#[derive(Deserialize, Debug, Clone, Copy)]
struct ResultInfo {
    total_pages: Option<u32>,
}

/// A zone in `GET /zones`.
#[derive(Deserialize, Debug)]
pub(super) struct Zone {
    pub id: String,
    pub name: String,
    /// The zone's authoritative servers (`ada.ns.cloudflare.com`, …).
    #[serde(default)]
    pub name_servers: Vec<String>,
}

/// A record in `GET /zones/{id}/dns_records`.
#[derive(Deserialize, Debug, Clone)]
pub(super) struct Record {
    pub id: String,
    pub content: String,
}

/// The body of `POST` and `PUT /zones/{id}/dns_records[/{id}]`.
#[derive(Serialize, Debug)]
pub(super) struct RecordBody<'a> {
    #[serde(rename = "type")]
    pub rtype: &'a str,
    pub name: &'a str,
    pub content: &'a str,
    /// 1 means "automatic" at Cloudflare.
    pub ttl: u32,
    /// Never proxied: these names must resolve to the broker itself.
    pub proxied: bool,
}

/// Why a call failed: either already a [`DnsError`], or Cloudflare's own error list (kept so
/// callers can treat a few codes as success).
pub(super) enum CallError {
    Api {
        status: StatusCode,
        errors: Vec<ApiMessage>,
    },
    Other(DnsError),
}

impl CallError {
    pub fn has_code(&self, code: i64) -> bool {
        matches!(self, Self::Api { errors, .. } if errors.iter().any(|e| e.code == code))
    }

    pub fn into_dns_error(self) -> DnsError {
        match self {
            Self::Other(e) => e,
            Self::Api { status, errors } => {
                let text = if errors.is_empty() {
                    format!("HTTP {status} without an error message")
                } else {
                    errors
                        .iter()
                        .map(|e| format!("{} (code {})", e.message, e.code))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                    || errors.iter().any(|e| AUTH_CODES.contains(&e.code));
                if auth {
                    DnsError::AuthRefused {
                        provider: KIND,
                        detail: text,
                    }
                } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    // Transient on Cloudflare's side: worth retrying later.
                    DnsError::Unreachable {
                        provider: KIND,
                        detail: format!("HTTP {status}: {text}"),
                    }
                } else {
                    DnsError::Rejected {
                        provider: KIND,
                        detail: text,
                    }
                }
            }
        }
    }
}

impl From<DnsError> for CallError {
    fn from(e: DnsError) -> Self {
        Self::Other(e)
    }
}

/// An authenticated HTTP client for one API base.
pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
    token: Secret,
}

impl Api {
    pub fn new(api_base: &str, token: Secret) -> Result<Self, DnsError> {
        let mut base = Url::parse(api_base.trim())
            .map_err(|e| DnsError::BadInput(format!("Cloudflare API base {api_base:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(DnsError::BadInput(format!(
                "Cloudflare API base {api_base:?} is not an http(s) URL"
            )));
        }
        // So that joining "zones" keeps the /client/v4 prefix.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            http: http_client()?,
            base,
            token,
        })
    }

    /// `base` + `path` + query pairs.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, DnsError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| DnsError::BadInput(format!("bad API path {path:?}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One call; `Ok(None)` when the call succeeded without a `result`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&RecordBody<'_>>,
    ) -> Result<Option<T>, CallError> {
        Ok(self.call_page(method, url, body).await?.0)
    }

    /// Every page of a listing `path?query`, following `result_info.total_pages`.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, CallError> {
        let per_page = PER_PAGE.to_string();
        let mut all = Vec::new();
        let mut page = 1u32;
        loop {
            let page_text = page.to_string();
            let mut q = query.to_vec();
            q.push(("per_page", &per_page));
            q.push(("page", &page_text));
            let url = self.url(path, &q)?;
            let (items, info) = self.call_page::<Vec<T>>(Method::GET, url, None).await?;
            all.extend(items.unwrap_or_default());
            let total = info.and_then(|i| i.total_pages).unwrap_or(1);
            if page >= total || page >= MAX_PAGES {
                return Ok(all);
            }
            page += 1;
        }
    }

    async fn call_page<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&RecordBody<'_>>,
    ) -> Result<(Option<T>, Option<ResultInfo>), CallError> {
        let what = format!("{method} {}", url.path());
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| DnsError::Unreachable {
            provider: KIND,
            detail: format!("{what}: {}", error_chain(&e)),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| DnsError::Unreachable {
            provider: KIND,
            detail: format!("{what}: reading the answer: {}", error_chain(&e)),
        })?;
        tracing::debug!(%status, %what, "cloudflare API call");
        match serde_json::from_slice::<Envelope<T>>(&bytes) {
            Ok(envelope) if envelope.success && status.is_success() => {
                Ok((envelope.result, envelope.result_info))
            }
            Ok(envelope) => Err(CallError::Api {
                status,
                errors: envelope.errors,
            }),
            // Not the envelope: a proxy's error page, an outage, or an API change.
            Err(_) if !status.is_success() => Err(CallError::Api {
                status,
                errors: Vec::new(),
            }),
            Err(e) => Err(DnsError::BadResponse {
                provider: KIND,
                detail: format!("{what}: unexpected JSON: {e}"),
            }
            .into()),
        }
    }
}

/// reqwest with rustls on ring (not aws-lc, which is what reqwest's own `rustls` feature
/// brings) and the operating system's trust store.
fn http_client() -> Result<reqwest::Client, DnsError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| DnsError::BadInput(format!("TLS setup for the Cloudflare API: {e}")))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("warren-dns/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DnsError::BadInput(format!("HTTP client for the Cloudflare API: {e}")))
}

/// reqwest's top-level message is often just "error sending request": add the causes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Cloudflare wants TXT content as quoted character-strings (RFC 1035 zone-file form) and
/// warns about unquoted ones; long values it splits itself.
pub(super) fn quote_txt(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The value a TXT record's `content` carries, whether stored quoted (`"a" "b"` → `ab`, as
/// Cloudflare splits long values) or, for older records, bare.
pub(super) fn unquote_txt(content: &str) -> String {
    let trimmed = content.trim();
    if !trimmed.starts_with('"') {
        return content.to_owned();
    }
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = trimmed.chars();
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (false, '"') => in_string = true,
            (false, _) => {} // whitespace between strings
            (true, '"') => in_string = false,
            (true, '\\') => out.extend(chars.next()),
            (true, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_quoting_round_trips() {
        for v in ["plain", "with \"quotes\" and \\", ""] {
            assert_eq!(unquote_txt(&quote_txt(v)), v);
        }
        assert_eq!(quote_txt("abc"), "\"abc\"");
        assert_eq!(unquote_txt("bare value"), "bare value");
        assert_eq!(unquote_txt("\"first\" \"second\""), "firstsecond");
    }

    #[test]
    fn errors_say_whose_side() {
        let e = |status: u16, code: i64| {
            CallError::Api {
                status: StatusCode::from_u16(status).expect("status"),
                errors: vec![ApiMessage {
                    code,
                    message: "m".into(),
                }],
            }
            .into_dns_error()
        };
        assert!(matches!(e(403, 9109), DnsError::AuthRefused { .. }));
        assert!(matches!(e(400, 10000), DnsError::AuthRefused { .. }));
        assert!(matches!(e(400, 9005), DnsError::Rejected { .. }));
        assert!(matches!(e(503, 1), DnsError::Unreachable { .. }));
        assert!(e(400, 9005).to_string().contains("m (code 9005)"));
    }

    #[test]
    fn api_base_keeps_its_path() {
        let api = Api::new("https://api.cloudflare.com/client/v4", Secret::new("t")).expect("ok");
        let url = api.url("zones", &[("name", "example.com")]).expect("url");
        assert_eq!(
            url.as_str(),
            "https://api.cloudflare.com/client/v4/zones?name=example.com"
        );
        assert!(Api::new("ftp://x", Secret::new("t")).is_err());
        assert!(Api::new("not a url", Secret::new("t")).is_err());
    }
}
