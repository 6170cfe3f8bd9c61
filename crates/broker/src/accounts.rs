//! The operator's account commands: passwords, quotas and API tokens, through the same service
//! functions as the API (`warren-tenants`), acting as the operator (`cli` in the audit log).

use anyhow::{Context, Result};
use clap::Subcommand;
use warren_store::Quotas;
use warren_tenants::{Caller, Scope, Tenants, parse_duration};

use crate::config::Config;
use crate::serve::open_existing_store;

/// `broker token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token; the token alone is printed on the last line (shown this once).
    Create {
        /// The token's owner.
        user: String,
        /// Its name, unique per user ("ci", "laptop").
        name: String,
        /// read, write or admin.
        #[arg(long, default_value = "write")]
        scope: String,
        /// Lifetime: 30d, 12h, 2w; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; it stops working on its next request.
    Revoke {
        /// As printed by `broker token list`.
        id: i64,
    },
}

/// The service functions over the configured store, without live tunnels (this is not the
/// serving process).
pub async fn tenants(config: &Config) -> Result<Tenants> {
    let store = open_existing_store(config).await?;
    let urls = crate::serve::public_urls(config, config.http_addr.port(), config.https_addr.port());
    Ok(crate::serve::tenants_for(
        config,
        store,
        None,
        urls,
        config.ssh_addr.port(),
    ))
}

/// `broker user passwd NAME`
pub async fn passwd(config: &Config, name: &str) -> Result<()> {
    let t = tenants(config).await?;
    let password = crate::prompt::password(name)?;
    t.set_password(&Caller::operator(), name, &password).await?;
    println!("password set for {name}; their console sessions have ended");
    Ok(())
}

/// A quota flag: a number, or `default` for the broker's configured value.
fn quota_value(flag: &str, v: Option<&str>, old: Option<i64>) -> Result<Option<i64>> {
    match v {
        None => Ok(old),
        Some("default") => Ok(None),
        Some(n) => n
            .parse::<i64>()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("--{flag}: expected a number or `default`, got {n:?}")),
    }
}

/// The flags of `broker user quota`, each a number, `default`, or absent (unchanged).
pub struct QuotaArgs<'a> {
    pub reservations: Option<&'a str>,
    pub tunnels: Option<&'a str>,
    pub connections: Option<&'a str>,
    pub bytes_per_sec: Option<&'a str>,
}

/// `broker user quota NAME …`
pub async fn quota(config: &Config, name: &str, args: QuotaArgs<'_>) -> Result<()> {
    let t = tenants(config).await?;
    let caller = Caller::operator();
    let user = t
        .store
        .user_by_name(name)
        .await?
        .with_context(|| format!("no user named {name:?}"))?;
    let old = t.store.quotas(user.id).await?;
    let q = Quotas {
        max_reservations: quota_value("max-reservations", args.reservations, old.max_reservations)?,
        max_tunnels: quota_value("max-tunnels", args.tunnels, old.max_tunnels)?,
        max_visitor_connections: quota_value(
            "max-visitor-connections",
            args.connections,
            old.max_visitor_connections,
        )?,
        max_tunnel_bytes_per_sec: quota_value(
            "tunnel-bytes-per-sec",
            args.bytes_per_sec,
            old.max_tunnel_bytes_per_sec,
        )?,
    };
    let u = t.set_quotas(&caller, name, q).await?;
    let q = &u.quotas;
    println!(
        "{}: max_reservations {}, max_tunnels {}, max_visitor_connections {}, max_tunnel_bytes_per_sec {}",
        u.name,
        q.max_reservations,
        q.max_tunnels,
        q.max_visitor_connections,
        q.max_tunnel_bytes_per_sec
    );
    Ok(())
}

/// `broker token …`
pub async fn token(config: &Config, cmd: TokenCmd) -> Result<()> {
    let t = tenants(config).await?;
    let caller = Caller::operator();
    match cmd {
        TokenCmd::Create {
            user,
            name,
            scope,
            expires,
        } => {
            let scope: Scope = scope.parse()?;
            let lifetime = expires.as_deref().map(parse_duration).transpose()?;
            let created = t
                .create_token(&caller, Some(&user), &name, scope, lifetime)
                .await?;
            eprintln!(
                "token {:?} for {} (scope {}, id {}): shown this once, store it now",
                created.info.name, created.info.user, created.info.scope, created.info.id
            );
            println!("{}", created.token);
        }
        TokenCmd::List { user, json } => {
            let users: Vec<String> = match user {
                Some(u) => vec![u],
                None => t
                    .store
                    .list_users()
                    .await?
                    .into_iter()
                    .map(|u| u.name)
                    .collect(),
            };
            let mut all = Vec::new();
            for u in users {
                all.extend(t.tokens(&caller, Some(&u)).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:>5} {:<16} {:<20} {:<6} {:<10} {:<10} LAST USED",
                    "ID", "USER", "NAME", "SCOPE", "HINT", "EXPIRES"
                );
                for k in all {
                    println!(
                        "{:>5} {:<16} {:<20} {:<6} {:<10} {:<10} {}",
                        k.id,
                        k.user,
                        k.name,
                        k.scope,
                        k.hint,
                        crate::admin::when(k.expires_at),
                        crate::admin::when(k.last_used_at)
                    );
                }
            }
        }
        TokenCmd::Revoke { id } => {
            let k = t.revoke_token(&caller, id).await?;
            println!("revoked token {} ({:?} of {})", k.id, k.name, k.user);
        }
    }
    Ok(())
}
