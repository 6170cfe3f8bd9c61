//! `ssh HOST domains …`: a tenant's custom domains (`warren_tenants`' domain functions, the
//! ones the API and `broker domains` call).

use std::fmt::Write as _;

use warren_tenants::{Caller, Tenants};

use super::{Args, Output, Res, fit, json};

/// The usage line of each form.
const USAGE: &str = "domains [add NAME DOMAIN | rm DOMAIN | verify DOMAIN] [--json]";

/// `domains`, `domains add NAME DOMAIN`, `domains rm DOMAIN`, `domains verify DOMAIN`.
pub(super) async fn domains(t: &Tenants, c: &Caller, a: &mut Args) -> Res {
    let verb = a.words.first().cloned();
    if verb.is_some() {
        a.words.remove(0);
    }
    let d = match verb.as_deref() {
        None => return list(t, c, a).await,
        Some("add") => {
            let [name, domain] = a.positional(2, "domains add NAME DOMAIN [--json]")? else {
                return Err(Output::fail(format!("usage: {USAGE}"), 2));
            };
            t.attach_domain(c, name, domain).await?
        }
        Some("rm") => {
            let [domain] = a.positional(1, "domains rm DOMAIN [--json]")? else {
                return Err(Output::fail(format!("usage: {USAGE}"), 2));
            };
            let d = t.detach_domain(c, None, domain).await?;
            if !a.json {
                return Ok(Output::ok(format!(
                    "removed {} from {}\n",
                    d.domain, d.reservation
                )));
            }
            d
        }
        Some("verify") => {
            let [domain] = a.positional(1, "domains verify DOMAIN [--json]")? else {
                return Err(Output::fail(format!("usage: {USAGE}"), 2));
            };
            t.verify_domain(c, None, domain).await?
        }
        Some(other) => {
            return Err(Output::fail(
                format!(
                    "unknown domains command {:?}; use domains, domains add, domains rm or \
                     domains verify",
                    fit(other, 20)
                ),
                2,
            ));
        }
    };
    if a.json {
        return Ok(json(&d));
    }
    Ok(Output::ok(d.describe(80)))
}

async fn list(t: &Tenants, c: &Caller, a: &Args) -> Res {
    a.positional(0, USAGE)?;
    let list = t.domains(c, None, false).await?;
    if a.json {
        return Ok(json(&list));
    }
    if list.is_empty() {
        return Ok(Output::ok(
            "No custom domains. Attach one: ssh HOST domains add NAME DOMAIN\n".into(),
        ));
    }
    let mut s = format!("{:<40} {:<20} {:<9} SERVED\n", "DOMAIN", "NAME", "STATE");
    for d in &list {
        let _ = writeln!(
            s,
            "{:<40} {:<20} {:<9} {}",
            fit(&d.domain, 40),
            fit(&d.reservation, 20),
            d.state,
            if d.serving { "yes" } else { "no" }
        );
        if let Some(e) = &d.last_error {
            let _ = writeln!(s, "  {}", fit(e, 76));
        }
    }
    Ok(Output::ok(s))
}
