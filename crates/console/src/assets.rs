//! The files of `web/`, embedded at build time (`include_bytes!`): building and running the
//! broker needs no Node, no network and no files beside the binary.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `web/`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub mime: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! web {
    ($($path:literal => $mime:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path)),
        }),*]
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console serves. A test checks that this list and `web/` agree, so a new
/// file cannot be forgotten here.
pub static ASSETS: &[Asset] = web![
    "index.html" => HTML,
    "static/console.css" => "text/css; charset=utf-8",
    "static/icon.svg" => "image/svg+xml",
    "static/app.js" => JS,
    "static/lib.js" => JS,
    "static/pages/account.js" => JS,
    "static/pages/audit.js" => JS,
    "static/pages/connect.js" => JS,
    "static/pages/dashboard.js" => JS,
    "static/pages/keys.js" => JS,
    "static/pages/login.js" => JS,
    "static/pages/pair.js" => JS,
    "static/pages/reservation.js" => JS,
    "static/pages/reservations.js" => JS,
    "static/pages/setup.js" => JS,
    "static/pages/status.js" => JS,
    "static/pages/tokens.js" => JS,
    "static/pages/users.js" => JS,
];

/// The file at `path` under `web/`.
pub(crate) fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

impl Asset {
    /// A strong validator: the build's content hash. Browsers revalidate each load
    /// (`no-cache`) and get a 304 while the binary is the same, so an upgrade is never served
    /// stale scripts against a newer API.
    fn etag(&self) -> &'static str {
        static TAGS: OnceLock<Vec<String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            ASSETS
                .iter()
                .map(|a| {
                    let mut h = DefaultHasher::new();
                    a.body.hash(&mut h);
                    format!("\"{:016x}\"", h.finish())
                })
                .collect()
        });
        let i = ASSETS
            .iter()
            .position(|a| std::ptr::eq(a, self))
            .unwrap_or_default();
        tags.get(i).map(String::as_str).unwrap_or("\"0\"")
    }

    pub(crate) fn respond(&'static self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut resp = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.mime)], self.body).into_response()
        };
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::ETAG, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("web/ is readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                files(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).expect("under web/");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_list_and_web_agree() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "web/ and ASSETS in assets.rs differ");
        for a in ASSETS {
            let want = if a.path.ends_with(".js") {
                JS
            } else if a.path.ends_with(".html") {
                HTML
            } else {
                a.mime
            };
            assert_eq!(a.mime, want, "{}", a.path);
        }
    }
}
