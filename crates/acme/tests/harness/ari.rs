//! ACME Renewal Information (RFC 9773) beside Pebble 2.4, which has none: the one part of a CA
//! that Debian's Pebble lacks, written to the RFC. Its directory is Pebble's with a
//! `renewalInfo` URL added; every other URL in it still points at Pebble, so accounts, orders
//! and challenges are Pebble's own. Its renewal-info endpoint answers with the window the test
//! sets, and records which certificates it was asked about.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::pebble::{Pebble, https_get, roots_of};

/// What the CA suggests for every certificate: renew within [start, end] (Unix seconds), and
/// ask again after `retry_after` seconds.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: i64,
    pub end: i64,
    pub retry_after: u64,
}

pub struct AriCa {
    /// The directory to give the manager instead of Pebble's.
    pub directory_url: String,
    window: Arc<Mutex<Window>>,
    asked: Arc<Mutex<Vec<String>>>,
    _stop: DropGuard,
}

impl AriCa {
    /// Serves, on a free port with Pebble's own listener certificate, Pebble's directory plus
    /// `renewalInfo`, suggesting `window` until told otherwise.
    pub async fn start(pebble: &Pebble, window: Window) -> AriCa {
        let (cert, key) = &pebble.listener_files;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("listener certificate")
            .collect::<Result<_, _>>()
            .expect("pem");
        let key = PrivateKeyDer::from_pem_file(key).expect("listener key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = State {
            pebble: pebble.listen,
            roots: roots_of(&pebble.listener_ca_pem),
            renewal_info: format!("https://{addr}/renewal-info"),
            window: Arc::new(Mutex::new(window)),
            asked: Arc::new(Mutex::new(Vec::new())),
        };
        let (window, asked) = (state.window.clone(), state.asked.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let state = Arc::new(state);
        tokio::spawn(async move {
            loop {
                let sock = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(sock).await {
                        Ok(tls) => tls,
                        Err(e) => return eprintln!("ARI stand-in: handshake failed: {e}"),
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    state.answer(req.uri().path()).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        AriCa {
            directory_url: format!("https://{addr}/dir"),
            window,
            asked,
            _stop: stop.drop_guard(),
        }
    }

    /// Moves the window, as a CA does before revoking certificates early.
    pub fn set_window(&self, window: Window) {
        *self.window.lock().expect("not poisoned") = window;
    }

    /// The certificate identifiers asked about so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("not poisoned").clone()
    }
}

struct State {
    pebble: std::net::SocketAddr,
    roots: rustls::RootCertStore,
    renewal_info: String,
    window: Arc<Mutex<Window>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl State {
    async fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        if path == "/dir" {
            let (status, body) = https_get(self.pebble, "/dir", &self.roots)
                .await
                .expect("Pebble's directory");
            assert_eq!(status, 200, "{body}");
            let mut dir: serde_json::Value = serde_json::from_str(&body).expect("json");
            dir["renewalInfo"] = self.renewal_info.clone().into();
            return json(StatusCode::OK, dir.to_string(), None);
        }
        let Some(id) = path.strip_prefix("/renewal-info/") else {
            return json(StatusCode::NOT_FOUND, "{}".into(), None);
        };
        self.asked.lock().expect("not poisoned").push(id.to_owned());
        let w = *self.window.lock().expect("not poisoned");
        let body = serde_json::json!({
            "suggestedWindow": { "start": rfc3339(w.start), "end": rfc3339(w.end) },
        });
        json(StatusCode::OK, body.to_string(), Some(w.retry_after))
    }
}

fn json(status: StatusCode, body: String, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after {
        rsp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, secs.into());
    }
    rsp
}

/// `secs` (Unix time) as an RFC 3339 UTC timestamp (days to civil date: H. Hinnant's algorithm).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[test]
fn timestamps_are_rfc3339() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
}
