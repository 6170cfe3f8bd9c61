//! A Host header (or an absolute-form authority) as a stranger sends it: routed to a label
//! under the domain, elsewhere, or refused; never a panic, and never a routed name that is
//! not a plain lowercase host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_edge::{Target, classify_host};

fuzz_target!(|data: &[u8]| {
    match classify_host(data, "tunnel.example.com") {
        Ok((Target::Tunnel(label), name)) => {
            assert_eq!(name, format!("{label}.tunnel.example.com"), "{data:?}");
            assert!(
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-_".contains(&b)),
                "{data:?} -> {label:?}"
            );
        }
        // Another host, or a bracketed IPv6 literal: still only what a host name is made of,
        // lowercase (it is shown in pages and written into forwarded headers); `_` is allowed,
        // as browsers send it in names such as `my_host.example`.
        Ok((Target::Elsewhere(_), name)) => assert!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"-_.:[]".contains(&b)),
            "{data:?} -> {name:?}"
        ),
        Err(_) => {}
    }
});
