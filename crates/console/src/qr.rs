//! `/qr.svg?text=…`: a QR code of a share link or a tunnel URL, drawn on the server (the
//! `qrcode` crate, already used for `ssh HOST qr NAME`) so the console needs no QR script.

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;

/// Longer text makes a code too dense to scan from a screen; links are far shorter.
const MAX_TEXT: usize = 1024;

#[derive(Deserialize)]
pub(crate) struct QrQuery {
    text: Option<String>,
}

pub(crate) async fn svg(Query(q): Query<QrQuery>) -> Response {
    let refuse = |why: &'static str| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            why,
        )
            .into_response()
    };
    let Some(text) = q.text.filter(|t| !t.is_empty()) else {
        return refuse("give the text to encode: /qr.svg?text=…\n");
    };
    if text.len() > MAX_TEXT {
        return refuse("text too long for a QR code (at most 1024 bytes)\n");
    }
    match QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let image = code
                .render::<svg::Color>()
                .min_dimensions(192, 192)
                .dark_color(svg::Color("#000000"))
                .light_color(svg::Color("#ffffff"))
                .build();
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                image,
            )
                .into_response()
        }
        Err(_) => refuse("text too long for a QR code\n"),
    }
}
