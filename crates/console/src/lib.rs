//! Warren's web console: the pages and scripts in `web/`, embedded in the binary at build time
//! and served on the console host beside the API.
//!
//! The console is a static client of `/api/v1`: one HTML shell for every page, a few ES modules
//! of plain JavaScript (no framework, no build step, nothing fetched from elsewhere) and a style
//! sheet. It has no handlers of its own beyond files and a QR code image, so whatever a tenant
//! can do in a browser, a script can do with a token, through the same code and the same
//! authorization checks (warren-tenants). Pages build the DOM with text nodes only, never HTML
//! strings, so a name, key comment, path or user agent cannot become markup; the Content
//! Security Policy (no inline script, nothing from other origins) holds even if one slipped.
#![warn(missing_docs)]

mod assets;
mod qr;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceExt;

pub use assets::Asset;

/// The pages: each path serves the one shell (`web/index.html`), whose script renders the page
/// the path names. A path not listed here is a 404 page, not the shell.
pub const PAGES: &[&str] = &[
    "/",
    "/login",
    "/setup",
    "/reservations",
    "/reservations/{name}",
    "/keys",
    "/tokens",
    "/connect",
    "/account",
    "/admin/users",
    "/admin/tunnels",
    "/admin/audit",
    "/admin/status",
    "/pair/{code}",
];

/// The policy every console response carries: scripts, styles, images and API calls from this
/// origin only, no inline script or style, no framing (clickjacking), no plugins, forms post
/// only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; manifest-src 'self'";

/// The console host's routes: the pages, their files, and `api` (`warren_api::router`) for
/// everything under `/api/`. Any other path is the console's 404 page. Every answer, the API's
/// included, carries the security headers.
pub fn router(api: Router) -> Router {
    let mut r = Router::new();
    for page in PAGES {
        r = r.route(page, get(shell));
    }
    // The API as the fallback, not a nested route: its handlers see their own path parameters
    // only, and its JSON 404 answers unknown /api/ paths.
    let rest = tower::service_fn(move |req: Request| {
        let api = api.clone();
        async move {
            let path = req.uri().path();
            if path == "/api" || path.starts_with("/api/") {
                api.oneshot(req).await
            } else {
                Ok(not_found().await.into_response())
            }
        }
    });
    r.route("/static/{*path}", get(asset))
        .route("/qr.svg", get(qr::svg))
        .fallback_service(rest)
        .layer(axum::middleware::map_response(security_headers))
}

async fn shell(headers: HeaderMap) -> Response {
    match assets::get("index.html") {
        Some(a) => a.respond(&headers),
        None => not_found().await.into_response(),
    }
}

async fn asset(
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match assets::get(&format!("static/{path}")) {
        Some(a) => a.respond(&headers),
        None => not_found().await.into_response(),
    }
}

async fn not_found() -> (
    StatusCode,
    [(header::HeaderName, &'static str); 1],
    &'static str,
) {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not found - Warren</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css\"><main><h1>Not found</h1>\
         <p>No console page here. <a href=\"/\">Go to the dashboard</a>.</p></main></html>",
    )
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Share links and setup tokens sit in URLs the console shows; none leaves in a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = axum::http::Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let api = Router::new().route("/api/v1/me", axum::routing::get(|| async { "api" }));
        let resp = router(api)
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn every_page_is_the_shell_with_the_policy() {
        for page in ["/", "/login", "/reservations/chat", "/pair/ABCD-EFGH"] {
            let (status, headers, body) = get(page, &[]).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(body.contains("/static/app.js"), "{page}: {body}");
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        }
    }

    #[tokio::test]
    async fn the_api_answers_under_api() {
        let (status, headers, body) = get("/api/v1/me", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "api"));
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        let (status, _, body) = get("/api/v1/nope", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!body.contains("<html"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_assets_revalidate() {
        let (status, headers, _) = get("/nope", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(get("/static/nope.js", &[]).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            get("/static/../index.html", &[]).await.0,
            StatusCode::NOT_FOUND
        );

        let (status, headers, body) = get("/static/app.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(!body.is_empty());
        let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
        let (status, _, body) = get("/static/app.js", &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    }

    #[tokio::test]
    async fn a_qr_code_is_an_svg_and_overlong_text_is_refused() {
        let (status, headers, body) = get("/qr.svg?text=https%3A%2F%2Fchat.example.com", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
        assert!(body.starts_with("<?xml") && body.contains("<svg"), "{body}");
        let long = "a".repeat(2000);
        let (status, _, body) = get(&format!("/qr.svg?text={long}"), &[]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("too long"), "{body}");
        assert_eq!(
            get("/qr.svg", &[]).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
