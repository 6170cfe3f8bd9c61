//! The PROXY protocol header (v1 text, v2 binary) a load balancer listed in
//! `proxy_protocol_from` puts in front of a connection: parsed, asked for more, or refused;
//! never a panic, and never a header longer than the bytes it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((len, _client))) = warren_accept::parse_header(data) {
        assert!(len > 0 && len <= data.len(), "{data:?} -> {len}");
        // What follows the header is the client's: parsing the header alone gives the same.
        assert_eq!(
            warren_accept::parse_header(&data[..len]).ok().flatten().map(|(n, _)| n),
            Some(len),
            "{data:?}"
        );
    }
});
