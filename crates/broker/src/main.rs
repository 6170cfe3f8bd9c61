//! `broker`: Warren's one program. `broker serve` runs the tunnel server; the other commands
//! administer the same database, safely while the server runs (it picks changes up live).

mod accounts;
mod admin;
mod check;
mod domains;
mod domains_cmd;
mod drain;
mod leader;
mod malloc;
mod nodes_cmd;
mod notify;
mod observe;
mod peers;
mod policy;
mod prompt;
mod public;
mod reload;
mod rules;
mod serve;
mod signals;
mod status;
mod sticky;
mod watch;
mod webhooks_cmd;

use anyhow::Result;
// The settings live in the package's library (src/lib.rs), for the config fuzz target.
use clap::{Parser, Subcommand};
use warren_broker::{config, logging};

use crate::config::{Config, SettingsArgs};

#[derive(Debug, Parser)]
#[command(
    name = "broker",
    version,
    about = "Warren: your own ngrok on a small VPS, for plain `ssh -R`."
)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: SSH for tunnel owners, HTTP for visitors.
    Serve,
    /// Apply database migrations and exit (serve does this on start too).
    Migrate,
    /// Check the config, database, certificate, DNS provider and ACME directory, changing
    /// nothing; exits non-zero with the reasons if any check fails.
    Check,
    /// Manage users.
    #[command(subcommand)]
    User(admin::UserCmd),
    /// Manage SSH public keys.
    #[command(subcommand)]
    Key(admin::KeyCmd),
    /// Reserve a name for a user: NAME.DOMAIN becomes theirs alone.
    Reserve {
        /// The user.
        user: String,
        /// The name (a DNS label: lowercase letters, digits, '-'), or a port for --kind tcp.
        name: String,
        /// What it serves: http (-R NAME:80), tls (passthrough, -R NAME:443) or tcp (-R tcp:PORT).
        #[arg(long, default_value = "http")]
        kind: String,
    },
    /// Access rules of a reserved name: basic auth, IP allow/deny lists (shown without an
    /// action).
    Rules(rules::RulesArgs),
    /// Share links of a reserved name: `--expires 2h [--uses N]` makes one, `list`, `revoke ID`.
    Share(rules::ShareArgs),
    /// Release a reserved name.
    Release {
        /// The name.
        name: String,
    },
    /// API tokens.
    #[command(subcommand)]
    Token(accounts::TokenCmd),
    /// Certificates: each name, issuer, expiry and last error.
    #[command(subcommand)]
    Certs(admin::CertsCmd),
    /// The audit log, newest last: who bound, claimed, released what; DNS and other errors.
    Events {
        /// How many of the newest events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (the API's page of events, newest first).
        #[arg(long)]
        json: bool,
    },
    /// Custom domains: list (the default), `add NAME DOMAIN`, `rm DOMAIN`, `verify DOMAIN`.
    Domains(domains_cmd::DomainsArgs),
    /// Webhooks for tunnel alerts: list (the default), `add USER URL` or `add --global URL`,
    /// `rm ID`, `deliveries ID`, `test ID`.
    Webhooks(webhooks_cmd::WebhooksArgs),
    /// Ask the running broker (on its admin listener) for its live tunnels, certificates and
    /// recent errors.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The brokers sharing this database: name, state, addresses, up since, last heartbeat,
    /// tunnels held.
    Nodes {
        /// Print JSON (the API's node objects).
        #[arg(long)]
        json: bool,
    },
    /// List reserved names.
    Names {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON (the API's reservation objects).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    malloc::tune();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A tenant is never shown an internal error's detail (the API and the SSH commands
            // say "internal error"); the operator at the CLI is, or a full disk would read
            // as "internal error" too.
            match e.downcast_ref::<warren_tenants::ServiceError>() {
                Some(warren_tenants::ServiceError::Internal(detail)) => {
                    eprintln!("error: {detail}")
                }
                _ => eprintln!("error: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = match cli.command {
        Command::Serve | Command::Check => Config::load(&cli.settings)?,
        _ => Config::load_admin(&cli.settings)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => serve::serve(config, cli.settings).await,
            Command::Check => check::check(&config, &cli.settings).await,
            Command::Migrate => {
                serve::open_store(&config).await?;
                println!("migrations applied to {}", config.database_url.redacted());
                Ok(())
            }
            Command::User(cmd) => admin::user(&config, cmd).await,
            Command::Key(cmd) => admin::key(&config, cmd).await,
            Command::Reserve { user, name, kind } => {
                admin::reserve(&config, &user, &name, &kind).await
            }
            Command::Token(cmd) => accounts::token(&config, cmd).await,
            Command::Rules(args) => rules::rules(&config, args).await,
            Command::Share(args) => rules::share(&config, args).await,
            Command::Release { name } => admin::release(&config, &name).await,
            Command::Domains(args) => domains_cmd::domains(&config, args).await,
            Command::Nodes { json } => nodes_cmd::nodes(&config, json).await,
            Command::Names { user, json } => admin::names(&config, user.as_deref(), json).await,
            Command::Webhooks(args) => webhooks_cmd::webhooks(&config, args).await,
            Command::Status { json } => status::status(&config, json).await,
            Command::Certs(cmd) => admin::certs(&config, cmd).await,
            Command::Events { limit, json } => admin::events(&config, limit, json).await,
        }
    })
}
