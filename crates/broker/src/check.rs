//! `broker check`: what an operator runs after editing the config and before restarting (or in
//! a deploy pipeline): the config parses, the database answers with the schema this build
//! expects, the operator's certificate loads, the DNS provider takes our credentials and the
//! ACME directory answers. It changes nothing: no database is created or migrated, no DNS
//! record written, no ACME account made, no port bound (the running broker holds them).
//! Every check runs even when an earlier one failed, so one run lists every problem; the exit
//! status is non-zero when any failed.

use std::time::Duration;

use anyhow::Result;
use warren_acme::KeyCipher;

use crate::config::{Config, SettingsArgs};

/// How long one remote check (database, DNS provider, CA) may take.
const REMOTE: Duration = Duration::from_secs(30);

/// One line of the report.
enum Outcome {
    Ok(String),
    /// Fine, but the operator should know (pending migrations, nothing configured).
    Note(String),
    Fail(String),
}

/// Runs every check, prints one line each, and fails if any did.
pub async fn check(config: &Config, args: &SettingsArgs) -> Result<()> {
    let file =
        crate::config::config_file(args.config.as_deref(), crate::config::DEFAULT_CONFIG_FILES);
    let mut failed = 0;
    let mut report = |what: &str, outcome: Outcome| {
        let (tag, text) = match outcome {
            Outcome::Ok(t) => ("ok  ", t),
            Outcome::Note(t) => ("note", t),
            Outcome::Fail(t) => {
                failed += 1;
                ("FAIL", t)
            }
        };
        println!("{tag}  {what:<9} {text}");
    };
    report(
        "config",
        Outcome::Ok(match &file {
            Some(f) => format!("{} parses; domain {}", f.display(), config.domain),
            None => format!(
                "no config file ({} absent): built-in defaults and flags; domain {}",
                crate::config::DEFAULT_CONFIG_FILES.join(", "),
                config.domain
            ),
        }),
    );
    report("database", database(config).await);
    let postgres = crate::serve::sqlite_path(&config.database_url.0).is_none();
    // Opened once, for the checks that read it, and only if its schema is current.
    let store = match postgres || config.public.acme.is_some() {
        true => current_store(config).await,
        false => None,
    };
    if postgres {
        report("postgres", connections(config, store.as_deref()).await);
    }
    report("tls", tls(config));
    report("dns", dns(config).await);
    report("acme", acme(config, store.as_deref()).await);
    if failed > 0 {
        anyhow::bail!(
            "{failed} check{} failed",
            if failed == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// On Postgres, whether the server can take every live node's connections, this one's
/// `database_pool` counted for each (what `serve` warns about at start).
async fn connections(config: &Config, store: Option<&dyn warren_store::Store>) -> Outcome {
    let Some(store) = store else {
        return Outcome::Note(
            "connections not checked: the database is not usable as it is (see above)".into(),
        );
    };
    let budget = tokio::time::timeout(
        REMOTE,
        crate::serve::ConnectionBudget::read(
            store,
            config.database_pool,
            &config.cluster.node_name,
        ),
    )
    .await;
    match budget {
        Err(_) => Outcome::Fail(format!("connections: no answer within {REMOTE:?}")),
        Ok(Err(e)) => Outcome::Fail(format!("connections: {e:#}")),
        Ok(Ok(None)) => Outcome::Note("connections: the database sets no limit".into()),
        Ok(Ok(Some(b))) if b.fits() => Outcome::Ok(b.describe()),
        // It serves; a reconnect storm is what would find the limit.
        Ok(Ok(Some(b))) => Outcome::Note(b.describe()),
    }
}

/// The store, opened only if its schema is current: opening migrates, and a check changes
/// nothing.
async fn current_store(config: &Config) -> Option<std::sync::Arc<dyn warren_store::Store>> {
    let current = matches!(
        tokio::time::timeout(REMOTE, warren_store::probe(&config.database_url.0)).await,
        Ok(Ok(s)) if s.pending() == 0 && s.unknown.is_empty()
    );
    if !current {
        return None;
    }
    tokio::time::timeout(REMOTE, crate::serve::open_existing_store(config))
        .await
        .ok()
        .and_then(Result::ok)
}

async fn database(config: &Config) -> Outcome {
    let url = config.database_url.redacted();
    if let Some(path) = crate::serve::sqlite_path(&config.database_url.0)
        && !path.exists()
    {
        return Outcome::Fail(format!(
            "{url}: no database there (`broker migrate` or the first `broker serve` creates it)"
        ));
    }
    let schema =
        match tokio::time::timeout(REMOTE, warren_store::probe(&config.database_url.0)).await {
            Err(_) => return Outcome::Fail(format!("{url}: no answer within {REMOTE:?}")),
            Ok(Err(e)) => return Outcome::Fail(format!("{url}: {e}")),
            Ok(Ok(s)) => s,
        };
    if !schema.unknown.is_empty() {
        Outcome::Fail(format!(
            "{url}: migrated by a newer broker (migrations {:?} are unknown to this build): \
             run that version, or restore a backup taken before the upgrade",
            schema.unknown
        ))
    } else if schema.pending() > 0 {
        Outcome::Note(format!(
            "{url}: reachable; {} of {} migrations pending (`broker serve` applies them at start)",
            schema.pending(),
            schema.known
        ))
    } else {
        Outcome::Ok(format!(
            "{url}: reachable, schema current ({} migrations)",
            schema.known
        ))
    }
}

fn tls(config: &Config) -> Outcome {
    let Some((chain, key)) = &config.tls_files else {
        return Outcome::Note(match &config.public.acme {
            Some(_) => "no operator certificate (tls_cert): certificates come from ACME".into(),
            None => {
                "no certificate source (tls_cert or acme_directory): HTTPS serves nothing".into()
            }
        });
    };
    match warren_tls::load_pem_files(chain, key) {
        Err(e) => Outcome::Fail(format!("tls_cert/tls_key: {}: {e}", chain.display())),
        Ok((_, info)) => {
            let left = info.not_after - warren_store::now();
            let text = format!(
                "{}: {} (expires in {} days)",
                chain.display(),
                info.names.join(", "),
                left / 86_400
            );
            if left <= 0 {
                Outcome::Fail(format!("{text}: expired"))
            } else if left < 14 * 86_400 {
                Outcome::Note(format!("{text}: renew it soon"))
            } else {
                Outcome::Ok(text)
            }
        }
    }
}

async fn dns(config: &Config) -> Outcome {
    use crate::config::DnsConfig;
    let dns = &config.public.dns;
    match dns {
        DnsConfig::None => {
            return Outcome::Note(
                "no DNS provider: names need the operator's own records (a wildcard)".into(),
            );
        }
        DnsConfig::Builtin { addr, .. } => {
            return Outcome::Ok(format!(
                "built-in server on {addr}: the broker answers for {} itself (delegate the zone \
                 to it with NS records)",
                config.domain
            ));
        }
        _ => {}
    }
    let what = crate::public::describe_remote(dns);
    let provider = match crate::public::remote_dns(dns) {
        Ok(Some(p)) => p,
        Ok(None) => return Outcome::Note(what),
        Err(e) => return Outcome::Fail(format!("{what}: {e:#}")),
    };
    match tokio::time::timeout(REMOTE, provider.check()).await {
        Err(_) => Outcome::Fail(format!("{what}: no answer within {REMOTE:?}")),
        Ok(Err(e)) => Outcome::Fail(format!("{what}: {e}")),
        Ok(Ok(proven)) => Outcome::Ok(proven),
    }
}

async fn acme(config: &Config, store: Option<&dyn warren_store::Store>) -> Outcome {
    let Some(a) = &config.public.acme else {
        return Outcome::Note("off (no acme_directory)".into());
    };
    // The key is read, never created: a first start makes it.
    let key_file = config.data_dir.join("cert-key");
    let key = match &a.cert_key {
        Some(k) => KeyCipher::from_base64(k.expose()).map_err(|e| format!("cert_key: {e}")),
        None if key_file.exists() => {
            KeyCipher::load_or_create(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))
        }
        // Any 32 bytes: without a key there can be no stored account to open either, and the
        // check below then says "no account yet" or that the stored one does not open.
        None => KeyCipher::from_bytes(&[0; 32]).map_err(|e| e.to_string()),
    };
    let key = match key {
        Ok(k) => k,
        Err(e) => return Outcome::Fail(e),
    };
    let settings = match crate::public::acme_settings(a, key) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("{e:#}")),
    };
    // The stored account is read through the store, whose opening migrates: only a database
    // already current is opened, so the check stays one that changes nothing.
    let Some(store) = store else {
        return Outcome::Fail(format!(
            "{}: not checked, the database is not usable as it is (see above)",
            a.directory
        ));
    };
    match tokio::time::timeout(REMOTE, warren_acme::check(&settings, store)).await {
        Err(_) => Outcome::Fail(format!("{}: no answer within {REMOTE:?}", a.directory)),
        Ok(Err(e)) => Outcome::Fail(format!("{}: {e}", a.directory)),
        Ok(Ok(text)) => Outcome::Ok(text),
    }
}
