//! The edge's own answers. Every failure names whose side failed, in words a visitor can act on.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// The body type the edge answers with: either the owner's streamed body or one of our pages.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Written raw when a visitor never finished its request head.
pub(crate) const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 45\r\n\r\nThe request headers did not arrive in time.\r\n";

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An HTML page with a title and one paragraph; `detail` is escaped here.
pub(crate) fn page(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status} {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}}\
         small{{color:#888}}</style></head><body><h1>{title}</h1><p>{detail}</p>\
         <p><small>{status} &middot; Warren</small></p></body></html>\n",
        status = status.as_u16(),
        title = escape(title),
        detail = escape(detail),
    );
    let mut resp = Response::new(full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A page with `Retry-After`.
pub(crate) fn retry_page(
    status: StatusCode,
    title: &str,
    detail: &str,
    secs: u64,
) -> Response<Body> {
    let mut resp = page(status, title, detail);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<script>&\"'"),
            "&lt;script&gt;&amp;&quot;&#39;"
        );
    }

    #[test]
    fn timeout_response_length_is_right() {
        let text = std::str::from_utf8(super::REQUEST_TIMEOUT).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
