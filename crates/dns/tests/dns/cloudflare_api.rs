//! A stand-in for Cloudflare's v4 API (the parts Warren uses), written to its published
//! behaviour: bearer-token auth, the `{success, errors, messages, result, result_info}`
//! envelope, paginated listings (deliberately tiny pages here), and its error codes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

pub const TOKEN: &str = "test-token-123";
pub const ZONE: &str = "example.com";
pub const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// Records per page, whatever the client asks for.
const PAGE_SIZE: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub id: String,
    pub rtype: String,
    pub name: String,
    pub content: String,
    pub ttl: u64,
    pub proxied: bool,
}

#[derive(Default)]
pub struct Books {
    pub records: Vec<Rec>,
    /// "METHOD /path?query" of every authenticated call, in order.
    pub calls: Vec<String>,
    next_id: u64,
}

impl Books {
    pub fn add(&mut self, rtype: &str, name: &str, content: &str) {
        self.next_id += 1;
        self.records.push(Rec {
            id: format!("rec{:04}", self.next_id),
            rtype: rtype.into(),
            name: name.into(),
            content: content.into(),
            ttl: 1,
            proxied: false,
        });
    }

    /// (type, content) of the records at `name`, sorted.
    pub fn at(&self, name: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .records
            .iter()
            .filter(|r| r.name == name)
            .map(|r| (r.rtype.clone(), r.content.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn count_calls(&self, prefix: &str) -> usize {
        self.calls.iter().filter(|c| c.starts_with(prefix)).count()
    }
}

pub type Shared = Arc<Mutex<Books>>;

pub struct StandIn {
    pub base: String,
    pub books: Shared,
}

pub async fn start() -> StandIn {
    let books: Shared = Arc::default();
    let app = Router::new()
        .route("/client/v4/zones", get(list_zones))
        .route(
            "/client/v4/zones/{zone}/dns_records",
            get(list_records).post(create),
        )
        .route(
            "/client/v4/zones/{zone}/dns_records/{id}",
            put(replace).delete(delete),
        )
        .with_state(books.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    StandIn {
        base: format!("http://{addr}/client/v4"),
        books,
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null});
    (status, Json(body)).into_response()
}

fn ok(result: Value, result_info: Option<Value>) -> Response {
    let mut body = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(info) = result_info {
        body["result_info"] = info;
    }
    Json(body).into_response()
}

/// Checks the bearer token and logs the call; `Some` is Cloudflare's answer to a bad token.
fn authorize(books: &Shared, headers: &HeaderMap, method: &Method, uri: &Uri) -> Option<Response> {
    let expected = format!("Bearer {TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Some(error(StatusCode::FORBIDDEN, 9109, "Invalid access token"));
    }
    books
        .lock()
        .expect("lock")
        .calls
        .push(format!("{method} {uri}"));
    None
}

fn page<T: serde::Serialize>(items: Vec<T>, q: &HashMap<String, String>) -> Response {
    let asked = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20usize);
    let per_page = asked.clamp(1, PAGE_SIZE);
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let total_pages = total.div_ceil(per_page);
    let slice: Vec<&T> = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let info = json!({"page": page, "per_page": per_page, "count": slice.len(), "total_count": total, "total_pages": total_pages});
    ok(json!(slice), Some(info))
}

async fn list_zones(
    State(books): State<Shared>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = authorize(&books, &headers, &method, &uri) {
        return r;
    }
    let zones: Vec<Value> = [
        (ZONE_ID, ZONE),
        ("0000000000000000000000000000other", "example.org"),
    ]
    .into_iter()
    .filter(|(_, name)| q.get("name").is_none_or(|n| n == name))
    .map(|(id, name)| json!({"id": id, "name": name, "status": "active"}))
    .collect();
    page(zones, &q)
}

fn check_zone(zone: &str) -> Option<Response> {
    if zone == ZONE_ID {
        None
    } else {
        Some(error(
            StatusCode::NOT_FOUND,
            7003,
            &format!(
                "Could not route to /zones/{zone}/dns_records, perhaps your object identifier is invalid?"
            ),
        ))
    }
}

fn to_json(r: &Rec) -> Value {
    json!({"id": r.id, "zone_id": ZONE_ID, "zone_name": ZONE, "type": r.rtype, "name": r.name,
           "content": r.content, "ttl": r.ttl, "proxied": r.proxied, "proxiable": true})
}

async fn list_records(
    State(books): State<Shared>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(zone): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = authorize(&books, &headers, &method, &uri).or_else(|| check_zone(&zone)) {
        return r;
    }
    let matching: Vec<Value> = books
        .lock()
        .expect("lock")
        .records
        .iter()
        .filter(|r| q.get("type").is_none_or(|t| *t == r.rtype))
        .filter(|r| {
            q.get("name")
                .is_none_or(|n| n.eq_ignore_ascii_case(&r.name))
        })
        .map(to_json)
        .collect();
    page(matching, &q)
}

/// Validates a create/replace body the way the real API would (and Warren's contract: ttl 1,
/// proxied false, TXT content quoted). `Err` is Cloudflare's (code, message) for a 400.
fn parse_body(body: &Bytes) -> Result<Rec, (u32, String)> {
    let bad = |code, msg: &str| (code, msg.to_owned());
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad(9207, "Request body is invalid."))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(rtype), Some(name), Some(content)) = (field("type"), field("name"), field("content"))
    else {
        return Err(bad(9005, "type, name and content are required"));
    };
    if name.ends_with('.') || !(name == ZONE || name.ends_with(&format!(".{ZONE}"))) {
        return Err(bad(9000, "DNS name is invalid."));
    }
    if name.contains("forbidden") {
        return Err(bad(9000, "DNS name is invalid."));
    }
    let valid = match rtype.as_str() {
        "A" => content.parse::<std::net::Ipv4Addr>().is_ok(),
        "AAAA" => content.parse::<std::net::Ipv6Addr>().is_ok(),
        "TXT" => content.len() >= 2 && content.starts_with('"') && content.ends_with('"'),
        _ => return Err(bad(9004, "This record type is not supported here.")),
    };
    if !valid {
        return Err(bad(
            9005,
            &format!("Content for {rtype} record is invalid."),
        ));
    }
    if v.get("ttl").and_then(Value::as_u64) != Some(1)
        || v.get("proxied").and_then(Value::as_bool) != Some(false)
    {
        return Err(bad(
            9021,
            "stand-in: Warren must send ttl 1 and proxied false",
        ));
    }
    Ok(Rec {
        id: String::new(),
        rtype,
        name,
        content,
        ttl: 1,
        proxied: false,
    })
}

async fn create(
    State(books): State<Shared>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path(zone): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = authorize(&books, &headers, &method, &uri).or_else(|| check_zone(&zone)) {
        return r;
    }
    let rec = match parse_body(&body) {
        Ok(r) => r,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, &message),
    };
    let mut b = books.lock().expect("lock");
    if b.records
        .iter()
        .any(|r| r.rtype == rec.rtype && r.name == rec.name && r.content == rec.content)
    {
        return error(
            StatusCode::BAD_REQUEST,
            81058,
            "An identical record already exists.",
        );
    }
    b.add(&rec.rtype, &rec.name, &rec.content);
    let created = b.records.last().map(to_json).unwrap_or_default();
    ok(created, None)
}

async fn replace(
    State(books): State<Shared>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path((zone, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(r) = authorize(&books, &headers, &method, &uri).or_else(|| check_zone(&zone)) {
        return r;
    }
    let rec = match parse_body(&body) {
        Ok(r) => r,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, &message),
    };
    let mut b = books.lock().expect("lock");
    let Some(existing) = b.records.iter_mut().find(|r| r.id == id) else {
        return error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    };
    *existing = Rec { id, ..rec };
    let updated = to_json(existing);
    ok(updated, None)
}

async fn delete(
    State(books): State<Shared>,
    headers: HeaderMap,
    method: Method,
    uri: Uri,
    Path((zone, id)): Path<(String, String)>,
) -> Response {
    if let Some(r) = authorize(&books, &headers, &method, &uri).or_else(|| check_zone(&zone)) {
        return r;
    }
    let mut b = books.lock().expect("lock");
    let before = b.records.len();
    b.records.retain(|r| r.id != id);
    if b.records.len() == before {
        return error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    }
    ok(json!({"id": id}), None)
}
