//! The admin CLI. Each command is one store call; the running server learns of it by tailing
//! the audit log (see `watch`).

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use warren_ssh::parse_public_key;

use crate::accounts::tenants;
use crate::config::Config;
use crate::serve::open_existing_store;

const ACTOR: &str = "cli";

/// A list in the API's JSON shape, so scripts read the same objects from both.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `broker user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user.
    Add {
        /// Login name (lowercase letters, digits, '-', '_', '.').
        name: String,
        /// May administer others (console).
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List {
        /// Print JSON (the API's user objects).
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their live tunnels drop at once and they cannot log in.
    Disable {
        /// The user.
        name: String,
    },
    /// Re-enable a disabled user.
    Enable {
        /// The user.
        name: String,
    },
    /// Set a user's console password (read from stdin when it is not a terminal); their
    /// console sessions end.
    Passwd {
        /// The user.
        name: String,
    },
    /// Set a user's quotas: a number, or `default` for the broker's configured value.
    Quota {
        /// The user.
        name: String,
        /// Names they may hold reserved.
        #[arg(long, value_name = "N|default")]
        max_reservations: Option<String>,
        /// Live tunnels at once.
        #[arg(long, value_name = "N|default")]
        max_tunnels: Option<String>,
        /// Concurrent visitor connections per tunnel.
        #[arg(long, value_name = "N|default")]
        max_visitor_connections: Option<String>,
        /// Bytes per second each way per tunnel, shared by its visitors (0: no limit); the
        /// quota `max_tunnel_bytes_per_sec` (the broker-wide flag of that name is taken).
        #[arg(long = "tunnel-bytes-per-sec", value_name = "N|default")]
        tunnel_bytes_per_sec: Option<String>,
    },
}

/// `broker key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Register a public key for a user, from a .pub file (or authorized_keys) or `-` for stdin.
    Add {
        /// The user.
        user: String,
        /// File with OpenSSH public key lines, or `-`.
        file: String,
    },
    /// List keys.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON (the API's key objects).
        #[arg(long)]
        json: bool,
    },
    /// Remove a key by fingerprint (SHA256:…); sessions using it are dropped.
    Rm {
        /// As printed by `broker key list` or `ssh-keygen -l`.
        fingerprint: String,
    },
}

pub async fn user(config: &Config, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Passwd { name } => return crate::accounts::passwd(config, &name).await,
        UserCmd::Quota {
            name,
            max_reservations,
            max_tunnels,
            max_visitor_connections,
            tunnel_bytes_per_sec,
        } => {
            return crate::accounts::quota(
                config,
                &name,
                crate::accounts::QuotaArgs {
                    reservations: max_reservations.as_deref(),
                    tunnels: max_tunnels.as_deref(),
                    connections: max_visitor_connections.as_deref(),
                    bytes_per_sec: tunnel_bytes_per_sec.as_deref(),
                },
            )
            .await;
        }
        _ => {}
    }
    let store = open_existing_store(config).await?;
    match cmd {
        UserCmd::Passwd { .. } | UserCmd::Quota { .. } => {}
        UserCmd::Add { name, admin } => {
            warren_tenants::check_user_name(&name)?;
            let u = store.create_user(ACTOR, &name, admin).await?;
            println!(
                "added user {}{}",
                u.name,
                if u.is_admin { " (admin)" } else { "" }
            );
        }
        UserCmd::List { json: true } => print_json(
            &tenants(config)
                .await?
                .users(&warren_tenants::Caller::operator())
                .await?,
        )?,
        UserCmd::List { json: false } => {
            let users = store.list_users().await?;
            println!(
                "{:<24} {:<6} {:<9} {:>5} {:>6}",
                "USER", "ADMIN", "STATUS", "KEYS", "NAMES"
            );
            let keys = store.list_keys(None).await?;
            let names = store.list_reservations(None).await?;
            for u in users {
                println!(
                    "{:<24} {:<6} {:<9} {:>5} {:>6}",
                    u.name,
                    if u.is_admin { "yes" } else { "no" },
                    if u.disabled { "disabled" } else { "active" },
                    keys.iter().filter(|k| k.user_id == u.id).count(),
                    names.iter().filter(|r| r.user_id == u.id).count(),
                );
            }
        }
        UserCmd::Disable { name } => {
            store.set_user_disabled(ACTOR, &name, true).await?;
            println!("disabled {name}; a running broker drops their tunnels within a few seconds");
        }
        UserCmd::Enable { name } => {
            store.set_user_disabled(ACTOR, &name, false).await?;
            println!("enabled {name}");
        }
    }
    Ok(())
}

pub async fn key(config: &Config, cmd: KeyCmd) -> Result<()> {
    let store = open_existing_store(config).await?;
    match cmd {
        KeyCmd::Add { user, file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the key from stdin")?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            if lines.is_empty() {
                bail!("{file}: no public key found");
            }
            if lines.iter().any(|l| l.contains("PRIVATE KEY")) {
                bail!("{file} is a private key; give the .pub file instead");
            }
            for line in lines {
                let key = parse_public_key(line).with_context(|| file.to_string())?;
                let k = store.add_key(ACTOR, &user, &key).await?;
                println!(
                    "added {} {} for {}",
                    k.algorithm, k.fingerprint, k.user_name
                );
            }
        }
        KeyCmd::List { user, json: true } => {
            let all = tenants(config).await?;
            print_json(
                &all.keys(
                    &warren_tenants::Caller::operator(),
                    Some(user.as_deref().unwrap_or("*")),
                )
                .await?,
            )?;
        }
        KeyCmd::List { user, json: false } => {
            println!(
                "{:<16} {:<52} {:<20} COMMENT",
                "USER", "FINGERPRINT", "TYPE"
            );
            for k in store.list_keys(user.as_deref()).await? {
                println!(
                    "{:<16} {:<52} {:<20} {}",
                    k.user_name, k.fingerprint, k.algorithm, k.comment
                );
            }
        }
        KeyCmd::Rm { fingerprint } => {
            let k = store.remove_key(ACTOR, &fingerprint).await?;
            println!("removed {} of {}", k.fingerprint, k.user_name);
        }
    }
    Ok(())
}

pub async fn reserve(config: &Config, user: &str, name: &str, kind: &str) -> Result<()> {
    let t = crate::accounts::tenants(config).await?;
    let caller = warren_tenants::Caller::operator();
    let stored = t.reservation_name(name, kind)?;
    if let Some(held) = t.store.reservation(&stored).await?
        && held.user_name != user
    {
        bail!("name {stored:?} is already reserved by {}", held.user_name);
    }
    let r = t.reserve(&caller, Some(user), name, kind).await?;
    println!("reserved {} ({}) for {}: {}", r.name, r.kind, r.user, r.url);
    Ok(())
}

pub async fn release(config: &Config, name: &str) -> Result<()> {
    let store = open_existing_store(config).await?;
    let r = store.release(ACTOR, name).await?;
    println!("released {} (was {}'s)", r.name, r.user_name);
    Ok(())
}

pub async fn names(config: &Config, user: Option<&str>, json: bool) -> Result<()> {
    if json {
        let all = tenants(config).await?;
        return print_json(
            &all.reservations(
                &warren_tenants::Caller::operator(),
                Some(user.unwrap_or("*")),
            )
            .await?,
        );
    }
    let store = open_existing_store(config).await?;
    println!("{:<32} USER", "NAME");
    for r in store.list_reservations(user).await? {
        println!("{:<32} {}", r.name, r.user_name);
    }
    Ok(())
}

/// `broker certs …`
#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// List certificates: name, issuer, expiry, last error, next attempt.
    List {
        /// Print JSON (the API's certificate objects).
        #[arg(long)]
        json: bool,
    },
}

pub(crate) use warren_tenants::when;

pub async fn certs(config: &Config, cmd: CertsCmd) -> Result<()> {
    let store = open_existing_store(config).await?;
    match cmd {
        CertsCmd::List { json: true } => {
            let all = tenants(config).await?;
            print_json(
                &all.certificates(&warren_tenants::Caller::operator(), true)
                    .await?,
            )?;
        }
        CertsCmd::List { json: false } => {
            println!(
                "{:<32} {:<36} {:<10} {:<10} LAST ERROR",
                "NAME", "ISSUER", "EXPIRES", "NEXT TRY"
            );
            for c in store.list_certificates().await? {
                println!(
                    "{:<32} {:<36} {:<10} {:<10} {}",
                    c.name,
                    c.issuer.as_deref().unwrap_or("-"),
                    when(c.not_after),
                    when(c.next_attempt),
                    c.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

pub async fn events(config: &Config, limit: i64, json: bool) -> Result<()> {
    if json {
        // The API's page: newest first, with the cursor for the next one.
        let all = tenants(config).await?;
        let page = all
            .events(&warren_tenants::Caller::operator(), true, None, Some(limit))
            .await?;
        return print_json(&page);
    }
    let store = open_existing_store(config).await?;
    let last = store.last_event_id().await?;
    let events = store
        .events_since((last - limit.max(1)).max(0), limit.max(1))
        .await?;
    for e in events {
        println!(
            "{:>6} {} {:<12} {:<14} {} {}",
            e.id,
            when(Some(e.at)),
            e.actor,
            e.action,
            e.subject,
            e.detail
        );
    }
    Ok(())
}
