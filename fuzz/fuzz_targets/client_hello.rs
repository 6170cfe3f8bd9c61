//! The first bytes of a TLS connection, in the pieces they arrived in (the first input byte
//! says where to cut), as the edge reads them to route by SNI: a name, no name, or an error;
//! never a panic, and never more than the cap buffered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_edge::Hello;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let mut hello = Hello::default();
    for chunk in rest.chunks(piece) {
        match hello.feed(chunk) {
            Ok(Some(Some(sni))) => {
                assert_eq!(sni, sni.to_ascii_lowercase());
                return;
            }
            Ok(Some(None)) | Err(_) => return,
            Ok(None) => {}
        }
    }
});
