//! A config file as an operator (or a careless paste) writes it: TOML read into the settings
//! every source shares, then the checks and defaults `broker serve` runs (`Config::from_settings`,
//! which touches no file). Never a panic; an accepted config keeps the facts the rest of the
//! broker relies on; the database password never shows in an error, in `Debug` or in the
//! redacted URL the start-up line prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_broker::config::{Config, SettingsArgs};

/// The password a database URL carries (`user:PW@` or `password=PW`), when it has one.
fn password(url: &str) -> Option<&str> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let from_query = query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case("password").then_some(v)
    });
    let from_userinfo = || {
        let s = base.find("://")? + 3;
        let at = base.rfind('@').filter(|&at| at > s)?;
        base[s..at].split_once(':').map(|(_, pw)| pw)
    };
    from_query.or_else(from_userinfo)
}

/// What the broker shows of a config: its `Debug` and redacted URL when accepted, its error
/// when refused.
fn shown(settings: SettingsArgs) -> String {
    match Config::from_settings(settings, None, None) {
        Ok(config) => format!("{config:?}\n{}", config.database_url.redacted()),
        Err(e) => format!("{e:#}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = toml::from_str::<SettingsArgs>(text) else {
        return;
    };
    // A password worth looking for: long enough not to occur by chance, written only once in
    // the input (a domain spelled the same would be echoed rightly), and not shown when the
    // same config carries another password instead. That last rule keeps out the words the
    // broker prints itself (`tgres://` in the error's `postgres://…`) and what the rest of the
    // URL spells once redacted (`tgres://warren:***@rr` in
    // `postgres://warren:tgres://warren:***@rr@rren`, redacted `postgres://warren:***@rren`).
    let secret = settings
        .database_url
        .as_deref()
        .and_then(password)
        .filter(|pw| pw.len() >= 8 && text.matches(*pw).count() == 1)
        .map(str::to_owned)
        .filter(|pw| {
            let mut other = settings.clone();
            other.database_url = other.database_url.map(|url| url.replacen(pw.as_str(), "x", 1));
            !shown(other).contains(pw.as_str())
        });
    match Config::from_settings(settings, None, None) {
        Ok(config) => {
            assert!(!config.domain.is_empty() && !config.domain.ends_with('.'));
            assert_eq!(config.domain, config.domain.to_ascii_lowercase());
            assert!(!config.console_label.contains('.'), "{:?}", config.console_label);
            assert!(config.max_header_bytes >= 8192);
            assert!(*config.tcp_ports.start() >= 1 && !config.tcp_ports.is_empty());
            if let Some(pw) = &secret {
                assert!(!format!("{config:?}").contains(pw.as_str()), "Debug shows the password");
                assert!(!config.database_url.redacted().contains(pw.as_str()), "redacted shows it");
            }
        }
        Err(e) => {
            if let Some(pw) = &secret {
                assert!(!format!("{e:#}").contains(pw.as_str()), "error shows the password: {e:#}");
            }
        }
    }
});
