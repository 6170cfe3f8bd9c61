//! `broker webhooks …`: the operator's door to the webhook service functions
//! (`warren_tenants`), which the API calls too. The operator sees every hook and may add
//! global ones.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use warren_tenants::{Caller, fit, when};

use crate::config::Config;

/// `broker webhooks [ACTION] [--json]`
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<WebhooksCmd>,
}

#[derive(Debug, Subcommand)]
enum WebhooksCmd {
    /// Every webhook: id, owner (or global), URL.
    List,
    /// Register a webhook for USER's tunnels (`add USER URL`), or a global one that gets every
    /// tunnel's events and certificate and DNS alerts (`add --global URL`). Prints the signing
    /// secret, shown this once.
    Add {
        /// USER URL, or URL with --global.
        #[arg(num_args = 1..=2, value_names = ["USER", "URL"])]
        args: Vec<String>,
        /// A global hook.
        #[arg(long)]
        global: bool,
    },
    /// Delete a webhook; its pending deliveries are dropped.
    Rm {
        /// The webhook's id.
        id: i64,
    },
    /// A webhook's delivery log, newest first.
    Deliveries {
        /// The webhook's id.
        id: i64,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Queue a test `ping` to a webhook (the running broker sends it).
    Test {
        /// The webhook's id.
        id: i64,
    },
}

/// Runs `broker webhooks …`.
pub async fn webhooks(config: &Config, args: WebhooksArgs) -> Result<()> {
    let t = crate::accounts::tenants(config).await?;
    let op = Caller::operator();
    let json = |v: &dyn erased::Json| -> Result<()> {
        println!("{}", v.pretty()?);
        Ok(())
    };
    match args.action.unwrap_or(WebhooksCmd::List) {
        WebhooksCmd::List => {
            let list = t.webhooks(&op, true).await?;
            if args.json {
                return json(&list);
            }
            println!("{:>5} {:<16} {:<9} URL", "ID", "USER", "CREATED");
            for h in &list {
                println!(
                    "{:>5} {:<16} {:<9} {}",
                    h.id,
                    h.user.as_deref().map_or("(global)".into(), |u| fit(u, 16)),
                    when(Some(h.created_at)),
                    h.url
                );
            }
        }
        WebhooksCmd::Add { args: a, global } => {
            let (user, url) = match (global, a.as_slice()) {
                (true, [url]) => (None, url),
                (false, [user, url]) => (Some(user.as_str()), url),
                (true, _) => bail!("with --global give only the URL"),
                (false, _) => bail!("give USER URL (or --global URL)"),
            };
            let h = t.create_webhook(&op, url, user, global).await?;
            if args.json {
                return json(&h);
            }
            println!(
                "webhook {} for {}: {}",
                h.id,
                h.user.as_deref().unwrap_or("every tunnel (global)"),
                h.url
            );
            println!(
                "signing secret (shown once; X-Warren-Signature is HMAC-SHA256 of TIMESTAMP.BODY with it):"
            );
            println!("{}", h.secret.unwrap_or_default());
        }
        WebhooksCmd::Rm { id } => {
            let h = t.delete_webhook(&op, id).await?;
            if args.json {
                return json(&h);
            }
            println!("deleted webhook {} ({})", h.id, h.url);
        }
        WebhooksCmd::Deliveries { id, limit } => {
            let list = t.webhook_deliveries(&op, id, Some(limit)).await?;
            if args.json {
                return json(&list);
            }
            println!(
                "{:>7} {:<14} {:<10} {:>8} {:>6} {:<9} ERROR",
                "ID", "EVENT", "STATE", "ATTEMPTS", "STATUS", "LAST"
            );
            for d in &list {
                println!(
                    "{:>7} {:<14} {:<10} {:>8} {:>6} {:<9} {}",
                    d.id,
                    fit(&d.event, 14),
                    d.state,
                    d.attempts,
                    d.last_status.map_or("-".into(), |s| s.to_string()),
                    when(d.last_attempt),
                    d.last_error.as_deref().map_or("-".into(), |e| fit(e, 60)),
                );
            }
        }
        WebhooksCmd::Test { id } => {
            let d = t.ping_webhook(&op, id).await?;
            if args.json {
                return json(&d);
            }
            println!(
                "ping queued as delivery {}; a running broker sends it within a second (see `broker webhooks deliveries {id}`)",
                d.id
            );
        }
    }
    Ok(())
}

/// `--json` output of any of the views.
mod erased {
    pub trait Json {
        fn pretty(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> serde_json::Result<String> {
            serde_json::to_string_pretty(self)
        }
    }
}
