//! Names a forward asks for (`ssh -R NAME:80:…`, `-R tcp:PORT`): a valid name is one DNS
//! label a tenant may hold; a TCP name round-trips through its port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_registry::{names, tcp_name, tcp_port};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if names::validate(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 63, "{name:?}");
        assert!(!name.contains('.') && !name.starts_with('-') && !name.ends_with('-'));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    if let Some(port) = tcp_port(name) {
        assert_eq!(tcp_port(&tcp_name(port)), Some(port));
    }
});
