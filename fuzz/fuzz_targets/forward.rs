//! A `tcpip-forward` global request as a client sends it (`string address, uint32 port`,
//! RFC 4254 §7.1), decoded the way russh decodes it, then read by the broker's `classify`:
//! never a panic; a named ask is for port 0, 80 or 443, and one left with a trailing dot
//! (`chat..DOMAIN`) is refused by the name check; a TCP ask comes only from the address `tcp`
//! and keeps its port; a refusal says why.
#![no_main]

// The module itself, not a copy: it is pure and needs only warren-registry, so this target
// does not compile the SSH server (russh, aws-lc) with coverage instrumentation.
#[path = "../../crates/ssh/src/ask.rs"]
mod ask;

use ask::{Ask, classify};
use libfuzzer_sys::fuzz_target;
use ssh_encoding::{Decode, Reader};
use warren_registry::{RouteKind, names};

const DOMAIN: &str = "tunnel.example.com";

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let (Ok(address), Ok(port)) = (String::decode(&mut r), u32::decode(&mut r)) else {
        return;
    };
    if !r.is_finished() {
        return; // russh answers trailing bytes with a protocol error (`ensure_end`).
    }
    for passthrough in [false, true] {
        match classify(&address, port, DOMAIN, passthrough) {
            Ask::Named(label, kind) => {
                assert_ne!(address, "tcp");
                assert!(matches!(port, 0 | 80 | 443), "{address:?}:{port}");
                // `chat..example.com` leaves `chat.`: not folded into `chat`, refused next.
                if label.ends_with('.') {
                    assert!(names::validate(&label).is_err(), "{address:?} -> {label:?}");
                }
                if kind == RouteKind::TlsPassthrough {
                    assert!(passthrough && port == 443);
                }
                // What the grant checks next: a valid name is one label, never the domain's.
                if names::validate(&label).is_ok() {
                    assert!(!label.contains('.') && !label.is_empty(), "{label:?}");
                }
            }
            Ask::Tcp(p) => {
                assert_eq!(address, "tcp");
                assert_eq!(p.map_or(0, u32::from), port);
            }
            Ask::Random => assert!(matches!(port, 0 | 80), "{address:?}:{port}"),
            Ask::Refuse(why) => assert!(!why.is_empty()),
        }
    }
});
