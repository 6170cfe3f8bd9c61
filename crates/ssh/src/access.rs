//! `ssh HOST rules NAME …` and `ssh HOST share NAME …`: who may visit a tenant's own names.
//! The words are the operator's (`broker rules …`, `broker share …`), so docs and scripts say
//! one thing; passwords and htpasswd files come on stdin, never on the command line (where
//! they would sit in the shell's history and in `ps`).

use std::fmt::Write as _;

use warren_tenants::rules;
use warren_tenants::shares::{self, ShareView};
use warren_tenants::{Caller, Tenants, parse_duration};

use crate::commands::{Args, Output, Res, fit, json};

const RULES_USAGE: &str = "rules NAME [ACTION]; `help` lists the actions";
const SHARE_USAGE: &str = "share NAME --expires 2h [--uses N] | list | revoke ID";

/// Whether `rules …` reads stdin: a password, or an htpasswd file.
pub(crate) fn reads_stdin(rest: &[String]) -> bool {
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    matches!(words.as_slice(), [_, "auth", "add" | "import", ..])
}

/// `rules NAME …`
pub(crate) async fn rules(t: &Tenants, c: &Caller, a: &mut Args, stdin: &[u8]) -> Res {
    let words: Vec<&str> = a.words.iter().map(String::as_str).collect();
    let name = match words.first() {
        Some(n) if !n.starts_with("--") => (*n).to_owned(),
        _ => return Err(Output::fail(format!("usage: {RULES_USAGE}"), 2)),
    };
    let done = |line: String| -> Res { Ok(Output::ok(line + "\n")) };
    match &words[1..] {
        [] => {
            let v = rules::show(t, c, &name).await?;
            if a.json {
                return Ok(json(&v));
            }
            Ok(Output::ok(v.text()))
        }
        ["auth", "add", user] => {
            let password = first_line(stdin).ok_or_else(|| {
                Output::fail(
                    format!("give the password on stdin: echo PASSWORD | ssh HOST rules {name} auth add {user}"),
                    2,
                )
            })?;
            rules::auth_add(t, c, &name, user, &password).await?;
            done(format!("{name}: basic-auth user {user} set"))
        }
        ["auth", "rm", user] => {
            rules::auth_rm(t, c, &name, user).await?;
            done(format!("{name}: basic-auth user {user} removed"))
        }
        ["auth", "import", "-"] => {
            let text = String::from_utf8_lossy(stdin);
            let users = rules::auth_import(t, c, &name, &text).await?;
            if a.json {
                return Ok(json(&serde_json::json!({ "imported": users })));
            }
            done(format!(
                "{name}: imported {} users: {}",
                users.len(),
                users.join(", ")
            ))
        }
        ["auth", "import", _file] => Err(Output::fail(
            format!("the file is on your machine: ssh HOST rules {name} auth import - < .htpasswd"),
            2,
        )),
        ["allow", cidr] => done(format!(
            "{name}: allow {}",
            rules::allow(t, c, &name, cidr).await?
        )),
        ["deny", cidr] => done(format!(
            "{name}: deny {}",
            rules::deny(t, c, &name, cidr).await?
        )),
        ["rm", cidr] => {
            rules::unlist(t, c, &name, cidr).await?;
            done(format!("{name}: {cidr} removed"))
        }
        ["clear"] => {
            let n = rules::clear(t, c, &name).await?;
            done(format!("{name}: {n} rules removed; anyone may visit"))
        }
        _ => Err(Output::fail(format!("usage: {RULES_USAGE}"), 2)),
    }
}

/// The first line of `stdin`, without its line end; `None` when there is none or it is empty.
fn first_line(stdin: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdin);
    let line = text.lines().next()?.trim_end_matches('\r');
    (!line.is_empty()).then(|| line.to_owned())
}

/// `share NAME --expires 2h [--uses N]`, `share NAME list`, `share NAME revoke ID`
pub(crate) async fn share(t: &Tenants, c: &Caller, a: &mut Args) -> Res {
    let expires = a.flag("expires")?;
    let uses = a.flag("uses")?;
    if let Some(extra) = a.words.iter().find(|w| w.starts_with("--")) {
        return Err(Output::fail(
            format!("unknown option {}; usage: {SHARE_USAGE}", fit(extra, 20)),
            2,
        ));
    }
    let words: Vec<&str> = a.words.iter().map(String::as_str).collect();
    match (words.as_slice(), expires) {
        ([name], Some(expires)) => {
            let expires = parse_duration(&expires)?;
            let uses = uses
                .map(|u| {
                    u.parse::<i64>()
                        .map_err(|_| Output::fail(format!("--uses: {u:?} is not a number"), 2))
                })
                .transpose()?;
            let made = shares::create(t, c, name, expires, uses).await?;
            if a.json {
                return Ok(json(&made));
            }
            Ok(Output::ok(format!(
                "{name}: share link {}\n{}\n",
                made.share.line(),
                made.url
            )))
        }
        ([name, "list"], None) => {
            let links = shares::list(t, c, name).await?;
            if a.json {
                return Ok(json(&links));
            }
            let mut s = format!("{}\n", ShareView::HEADING);
            for l in &links {
                let _ = writeln!(s, "{}", l.line());
            }
            if links.is_empty() {
                let _ = writeln!(
                    s,
                    "No share links. Make one: ssh HOST share {name} --expires 2h"
                );
            }
            Ok(Output::ok(s))
        }
        ([name, "revoke", id], None) => {
            let id: i64 = id.parse().map_err(|_| {
                Output::fail(format!("{:?} is not a share link id", fit(id, 20)), 2)
            })?;
            let l = shares::revoke(t, c, name, id).await?;
            if a.json {
                return Ok(json(&l));
            }
            Ok(Output::ok(format!("{name}: share link {} revoked\n", l.id)))
        }
        ([_, "list" | "revoke", ..], Some(_)) => Err(Output::fail(
            "--expires makes a new link; leave it out with list or revoke",
            2,
        )),
        _ => Err(Output::fail(format!("usage: {SHARE_USAGE}"), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_only_for_passwords_and_files() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(reads_stdin(&w("chat auth add bob")));
        assert!(reads_stdin(&w("chat auth import -")));
        assert!(!reads_stdin(&w("chat allow 10.0.0.0/8")));
        assert!(!reads_stdin(&w("chat")));
    }

    #[test]
    fn password_is_the_first_line() {
        assert_eq!(first_line(b"s3cret\n").as_deref(), Some("s3cret"));
        assert_eq!(first_line(b"s3cret\r\nmore").as_deref(), Some("s3cret"));
        assert_eq!(first_line(b"\n"), None);
        assert_eq!(first_line(b""), None);
    }

    #[test]
    fn usage_fits_80_columns() {
        for usage in [RULES_USAGE, SHARE_USAGE] {
            assert!("error: usage: ".len() + usage.len() <= 80, "{usage}");
        }
    }
}
