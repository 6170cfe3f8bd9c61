//! SIGHUP: read the configuration again and apply what can change without dropping a tunnel.
//!
//! Today that is the operator's certificate (`tls_cert`/`tls_key`, renewed by certbot or a
//! corporate CA): its names are served the new chain from the next handshake on. Every other
//! setting is wired into listeners and tasks at start; a changed one is named in the log as
//! waiting for a restart, so nobody believes a change took effect when it did not.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use warren_tls::CertStore;

use crate::config::{Config, SettingsArgs};

/// The settings that SIGHUP applies live.
const LIVE: &[&str] = &["tls_files"];

/// Reloads from `args` against the `running` configuration.
pub fn reload(args: &SettingsArgs, running: &Config, certs: &CertStore) {
    let new = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "SIGHUP: configuration not reloaded; the running one stays");
            return;
        }
    };
    if let Some((chain, key)) = &new.tls_files {
        match warren_tls::load_pem_files(chain, key) {
            Ok((key, cert)) => {
                let key = Arc::new(key);
                for name in &cert.names {
                    certs.insert(name, key.clone());
                }
                info!(names = ?cert.names, not_after = cert.not_after, "SIGHUP: operator certificate reloaded");
            }
            Err(e) => {
                warn!(error = %e, file = %chain.display(), "SIGHUP: operator certificate not reloaded; the old one stays");
            }
        }
    }
    let pending: Vec<String> = changed_settings(running, &new)
        .into_iter()
        .filter(|f| !LIVE.contains(&f.as_str()))
        .collect();
    if pending.is_empty() {
        info!("SIGHUP: configuration reloaded");
    } else {
        warn!(settings = ?pending, "SIGHUP: these settings changed but take effect only at the next restart");
    }
}

/// The top-level fields of [`Config`] whose values differ, read off the pretty `Debug` form
/// (one field per line at the first indent; secrets print as `MASKED`, so they never reach the
/// log, though a changed secret is then not seen as changed).
pub fn changed_settings(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (fields(&format!("{a:#?}")), fields(&format!("{b:#?}")));
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn fields(debug: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in debug.lines() {
        let top = line.strip_prefix("    ").filter(|l| !l.starts_with(' '));
        if let Some((name, value)) = top.and_then(|l| l.split_once(':')) {
            current = Some(name.to_owned());
            out.insert(name.to_owned(), value.to_owned());
        } else if let Some(name) = &current
            && let Some(v) = out.get_mut(name)
        {
            v.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_are_named() -> anyhow::Result<()> {
        let a = Config::load(&SettingsArgs::default())?;
        let b = Config::load(&SettingsArgs {
            grace_secs: Some(5),
            trusted_proxies: Some(vec!["10.0.0.0/8".parse()?]),
            ..SettingsArgs::default()
        })?;
        assert!(changed_settings(&a, &a).is_empty());
        assert_eq!(changed_settings(&a, &b), ["grace", "trusted_proxies"]);
        Ok(())
    }
}
