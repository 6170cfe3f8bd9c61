//! Warren's DNS providers against real peers: the built-in server queried by real DNS clients,
//! RFC 2136 against a real Knot DNS server, Cloudflare against a stand-in of its v4 API.
//! One test binary; every server listens on 127.0.0.1 port 0, so tests run in parallel.

mod builtin;
mod cloudflare;
mod cloudflare_api;
mod knot;
mod rfc2136;
mod support;
