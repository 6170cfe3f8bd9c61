//! `broker domains …`: the operator's door to the custom-domain service functions
//! (`warren_tenants`), which the SSH commands and the API call too. The operator acts on
//! every tenant's domains.

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_tenants::{Caller, DomainView};

use crate::admin::when;
use crate::config::Config;

/// `broker domains [ACTION] [--json]`
#[derive(Debug, Args)]
pub struct DomainsArgs {
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<DomainsCmd>,
}

#[derive(Debug, Subcommand)]
enum DomainsCmd {
    /// Every custom domain (or one reservation's), with its state and last check.
    List {
        /// Only this reservation's.
        #[arg(long)]
        name: Option<String>,
    },
    /// Attach DOMAIN to the reservation NAME; prints the records that prove it.
    Add {
        /// The reservation (an http or tls name).
        name: String,
        /// The host name, e.g. app.their-domain.org.
        domain: String,
    },
    /// Detach DOMAIN (it stops being served at once).
    Rm {
        /// The host name.
        domain: String,
        /// The reservation, when several have DOMAIN attached (pending).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check DOMAIN's records now, instead of at its next scheduled check.
    Verify {
        /// The host name.
        domain: String,
        /// The reservation, when several have DOMAIN attached (pending).
        #[arg(long)]
        name: Option<String>,
    },
}

/// Runs `broker domains …`.
pub async fn domains(config: &Config, args: DomainsArgs) -> Result<()> {
    let t = crate::accounts::tenants(config).await?;
    let op = Caller::operator();
    let one = |d: DomainView| -> Result<()> {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            print!("{}", d.describe(100));
        }
        Ok(())
    };
    match args.action.unwrap_or(DomainsCmd::List { name: None }) {
        DomainsCmd::List { name } => {
            let list = t.domains(&op, name.as_deref(), name.is_none()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<40} {:<20} {:<12} {:<9} {:<8} CHECKED",
                "DOMAIN", "NAME", "OWNER", "STATE", "SERVED"
            );
            for d in &list {
                println!(
                    "{:<40} {:<20} {:<12} {:<9} {:<8} {}",
                    d.domain,
                    d.reservation,
                    d.owner,
                    d.state,
                    if d.serving { "yes" } else { "no" },
                    when(d.last_checked)
                );
                if let Some(e) = &d.last_error {
                    println!("  {e}");
                }
            }
            Ok(())
        }
        DomainsCmd::Add { name, domain } => one(t.attach_domain(&op, &name, &domain).await?),
        DomainsCmd::Rm { domain, name } => {
            let d = t.detach_domain(&op, name.as_deref(), &domain).await?;
            if args.json {
                return one(d);
            }
            println!("removed {} from {}", d.domain, d.reservation);
            Ok(())
        }
        DomainsCmd::Verify { domain, name } => {
            one(t.verify_domain(&op, name.as_deref(), &domain).await?)
        }
    }
}
