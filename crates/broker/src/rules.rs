//! `broker rules NAME …` and `broker share NAME …`: the operator's door to the access-rule
//! service functions (`warren_tenants::rules`, `warren_tenants::shares`), which the SSH
//! commands and the API call too. The operator acts on any name.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use warren_tenants::rules as service;
use warren_tenants::shares::{self, ShareView};
use warren_tenants::{Caller, parse_duration};

use crate::config::Config;

/// `broker rules NAME [ACTION]`
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// The reserved name (`tcp:PORT` for a TCP reservation).
    name: String,
    /// Print the rules as JSON (without an action).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<RulesCmd>,
}

/// What to change; without one, the rules are shown.
#[derive(Debug, Subcommand)]
enum RulesCmd {
    /// Basic-auth users (HTTP names only).
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Let a network in (CIDR or address). Once any is allowed, only allowed ones may visit;
    /// the most specific entry covering an address decides.
    Allow {
        /// `203.0.113.0/24`, `2001:db8::/32`, `198.51.100.7`.
        cidr: String,
    },
    /// Keep a network out (CIDR or address).
    Deny {
        /// `203.0.113.0/24`, `2001:db8::/32`, `198.51.100.7`.
        cidr: String,
    },
    /// Remove one network's allow or deny entry.
    Rm {
        /// As it was given.
        cidr: String,
    },
    /// Remove every basic-auth user and IP entry (share links stay until revoked).
    Clear,
}

#[derive(Debug, Subcommand)]
enum AuthCmd {
    /// Add a user, or set a new password for one: the password is read from stdin when it is
    /// not a terminal (first line), else prompted for.
    Add {
        /// The user name visitors type.
        user: String,
    },
    /// Remove a user.
    Rm {
        /// The user name.
        user: String,
    },
    /// Import an htpasswd file (`-` for stdin): bcrypt (`htpasswd -B`) and argon2 lines are
    /// taken as they are; MD5, SHA-1 and crypt lines are refused with the line number.
    Import {
        /// The file, or `-`.
        file: String,
    },
}

/// `broker share NAME --expires 2h [--uses N]`, `… list`, `… revoke ID`
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// The reserved name (HTTP names with basic auth).
    name: String,
    /// Make a link that expires after this long (`30m`, `2h`, `7d`); the link is printed
    /// alone on the last line.
    #[arg(long)]
    expires: Option<String>,
    /// How many times the link can be opened (default: until it expires).
    #[arg(long)]
    uses: Option<i64>,
    /// Print as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<ShareCmd>,
}

#[derive(Debug, Subcommand)]
enum ShareCmd {
    /// The name's links: id, state, uses left, expiry.
    List,
    /// Revoke a link: it and every cookie it gave stop working within a second.
    Revoke {
        /// The link's id, as `share NAME list` shows it.
        id: i64,
    },
}

pub async fn rules(config: &Config, args: RulesArgs) -> Result<()> {
    let ctx = crate::accounts::tenants(config).await?;
    let op = Caller::operator();
    let name = &args.name;
    match args.action {
        None => {
            let view = service::show(&ctx, &op, name).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", view.text());
            }
        }
        Some(RulesCmd::Auth(AuthCmd::Add { user })) => {
            let password = crate::prompt::password(&format!("{user} on {name}"))?;
            service::auth_add(&ctx, &op, name, &user, &password).await?;
            println!("{name}: basic-auth user {user} set");
        }
        Some(RulesCmd::Auth(AuthCmd::Rm { user })) => {
            service::auth_rm(&ctx, &op, name, &user).await?;
            println!("{name}: basic-auth user {user} removed");
        }
        Some(RulesCmd::Auth(AuthCmd::Import { file })) => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading htpasswd lines from stdin")?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let users = service::auth_import(&ctx, &op, name, &text).await?;
            println!(
                "{name}: imported {} users: {}",
                users.len(),
                users.join(", ")
            );
        }
        Some(RulesCmd::Allow { cidr }) => {
            let net = service::allow(&ctx, &op, name, &cidr).await?;
            println!("{name}: allow {net}");
        }
        Some(RulesCmd::Deny { cidr }) => {
            let net = service::deny(&ctx, &op, name, &cidr).await?;
            println!("{name}: deny {net}");
        }
        Some(RulesCmd::Rm { cidr }) => {
            service::unlist(&ctx, &op, name, &cidr).await?;
            println!("{name}: {cidr} removed");
        }
        Some(RulesCmd::Clear) => {
            let n = service::clear(&ctx, &op, name).await?;
            println!("{name}: {n} rules removed; anyone may visit");
        }
    }
    Ok(())
}

pub async fn share(config: &Config, args: ShareArgs) -> Result<()> {
    let ctx = crate::accounts::tenants(config).await?;
    let op = Caller::operator();
    let name = &args.name;
    match (args.action, args.expires) {
        (Some(ShareCmd::List), None) => {
            let links = shares::list(&ctx, &op, name).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else {
                println!("{}", ShareView::HEADING);
                for s in &links {
                    println!("{}", s.line());
                }
            }
        }
        (Some(ShareCmd::Revoke { id }), None) => {
            let s = shares::revoke(&ctx, &op, name, id).await?;
            println!("{name}: share link {} revoked", s.id);
        }
        (None, Some(expires)) => {
            let expires = parse_duration(&expires)?;
            let made = shares::create(&ctx, &op, name, expires, args.uses).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                println!("{name}: share link {}", made.share.line());
                println!("{}", made.url);
            }
        }
        (Some(_), Some(_)) => bail!("--expires makes a new link; leave it out with list or revoke"),
        (None, None) => {
            bail!("give --expires (30m, 2h, 7d) to make a link, or `list`, or `revoke ID`")
        }
    }
    Ok(())
}
