//! Commands a tenant runs with their key alone: `ssh tunnel@host ls`.
//!
//! Each command is one call into `warren-tenants`, the same function the REST API and the
//! operator's CLI call, so the three cannot disagree. Output is plain text that fits 80 columns,
//! or JSON with `--json`; a failure is one line on stderr and a non-zero exit status.

use std::fmt::Write as _;

use serde::Serialize;
use warren_tenants::{Caller, ServiceError, Tenants};

mod domains;

/// What a command printed and how it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) code: u32,
}

impl Output {
    pub(crate) fn ok(stdout: String) -> Self {
        Self {
            stdout,
            ..Self::default()
        }
    }

    pub(crate) fn fail(line: impl std::fmt::Display, code: u32) -> Self {
        Self {
            stderr: format!("error: {line}\n"),
            code,
            ..Self::default()
        }
    }
}

impl From<ServiceError> for Output {
    fn from(e: ServiceError) -> Self {
        Output::fail(e, 1)
    }
}

/// Longest command line or stdin taken.
pub(crate) const MAX_INPUT: usize = 64 * 1024;

pub(crate) const HELP: &str = "\
Warren: manage your tunnels with your SSH key.

  ssh -R 0:localhost:8080 HOST           a tunnel with a random name
  ssh -R NAME:80:localhost:8080 HOST     a tunnel on your name NAME

Commands (ssh HOST COMMAND; add --json for scripts):
  help                         this text
  ls                           your names and live tunnels
  reserve NAME [--kind K]      keep NAME for you (K: http, tls or tcp)
  release NAME                 give NAME back
  keys                         your SSH keys
  keys add                     add the public key given on stdin
  keys rm FINGERPRINT          remove a key (its sessions drop)
  tokens                       your API tokens
  tokens create NAME [--scope read|write] [--expires 30d]
  tokens revoke ID
  requests NAME                NAME's recent requests (query values hidden)
  rules NAME                   who may visit NAME; change it with:
    auth add USER              a password (given on stdin) for USER
    auth rm USER               remove USER
    auth import -              users of an htpasswd file on stdin
    allow CIDR, deny CIDR      let a network in, or keep it out
    rm CIDR, clear             remove one network, or every rule
  share NAME --expires 2h [--uses N]   a link past NAME's password
  share NAME list, share NAME revoke ID
  qr NAME                      NAME's URL as a QR code, for a phone
  domains                      your custom domains (app.example.org)
  domains add NAME DOMAIN      serve DOMAIN as NAME; shows the records to add
  domains rm DOMAIN
  domains verify DOMAIN        check DOMAIN's records now
";

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// backslash escapes the next character outside single quotes.
pub(crate) fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("unterminated \" quote")?),
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or("trailing backslash")?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c if c.is_control() => return Err("control characters are not allowed".into()),
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Whether the command reads stdin (it runs once the client sends EOF).
pub(crate) fn reads_stdin(args: &[String]) -> bool {
    match args.split_first() {
        Some((k, rest)) if k == "keys" => rest.first().is_some_and(|a| a == "add"),
        Some((k, rest)) if k == "rules" => crate::access::reads_stdin(rest),
        _ => false,
    }
}

/// The arguments after the command, `--json` taken out.
pub(crate) struct Args {
    pub(crate) words: Vec<String>,
    pub(crate) json: bool,
}

impl Args {
    fn parse(rest: &[String]) -> Self {
        let json = rest.iter().any(|w| w == "--json");
        Self {
            words: rest.iter().filter(|w| *w != "--json").cloned().collect(),
            json,
        }
    }

    /// The value of `--flag VALUE` or `--flag=VALUE`, removed from the words.
    pub(crate) fn flag(&mut self, name: &str) -> Result<Option<String>, Output> {
        let long = format!("--{name}");
        let eq = format!("--{name}=");
        let mut i = 0;
        while i < self.words.len() {
            if self.words[i] == long {
                if i + 1 >= self.words.len() {
                    return Err(Output::fail(format!("{long} needs a value"), 2));
                }
                let v = self.words.remove(i + 1);
                self.words.remove(i);
                return Ok(Some(v));
            }
            if let Some(v) = self.words[i].strip_prefix(&eq) {
                let v = v.to_owned();
                self.words.remove(i);
                return Ok(Some(v));
            }
            i += 1;
        }
        Ok(None)
    }

    /// Exactly `n` positional words, else a usage error.
    fn positional(&self, n: usize, usage: &str) -> Result<&[String], Output> {
        if let Some(extra) = self.words.iter().find(|w| w.starts_with("--")) {
            return Err(Output::fail(
                format!("unknown option {extra}; usage: {usage}"),
                2,
            ));
        }
        if self.words.len() == n {
            Ok(&self.words)
        } else {
            Err(Output::fail(format!("usage: {usage}"), 2))
        }
    }
}

pub(crate) fn json<T: Serialize>(v: &T) -> Output {
    match serde_json::to_string_pretty(v) {
        Ok(s) => Output::ok(s + "\n"),
        Err(e) => Output::fail(e, 1),
    }
}

pub(crate) use warren_tenants::fit;

/// Runs one command for `caller`; `stdin` is what the client sent before EOF.
pub(crate) async fn run(
    tenants: &Tenants,
    caller: &Caller,
    args: &[String],
    stdin: &[u8],
) -> Output {
    let Some((cmd, rest)) = args.split_first() else {
        return Output::ok(HELP.into());
    };
    let mut a = Args::parse(rest);
    let result = match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Output::ok(HELP.into())),
        "ls" => ls(tenants, caller, &a).await,
        "reserve" => reserve(tenants, caller, &mut a).await,
        "release" => release(tenants, caller, &a).await,
        "keys" => keys(tenants, caller, &mut a, stdin).await,
        "tokens" => tokens(tenants, caller, &mut a).await,
        "qr" => qr(tenants, caller, &a).await,
        "requests" => requests(tenants, caller, &a).await,
        "rules" => crate::access::rules(tenants, caller, &mut a, stdin).await,
        "share" => crate::access::share(tenants, caller, &mut a).await,
        "domains" => domains::domains(tenants, caller, &mut a).await,
        "--bad-command" => Err(Output::fail(
            format!(
                "cannot read the command: {}",
                rest.first().map_or("", String::as_str)
            ),
            2,
        )),
        other => {
            let mut out = Output::fail(format!("unknown command {:?}", fit(other, 40)), 2);
            out.stdout = HELP.into();
            Ok(out)
        }
    };
    result.unwrap_or_else(|e| e)
}

pub(crate) type Res = Result<Output, Output>;

async fn ls(t: &Tenants, c: &Caller, a: &Args) -> Res {
    a.positional(0, "ls [--json]")?;
    let names = t.reservations(c, None).await?;
    let live = t.tunnels(c, false).await?;
    if a.json {
        return Ok(json(
            &serde_json::json!({ "reservations": names, "tunnels": live }),
        ));
    }
    let mut s = String::new();
    if names.is_empty() {
        s.push_str("No reserved names. Reserve one: ssh HOST reserve NAME\n");
    } else {
        let _ = writeln!(s, "{:<24} {:<5} {:<5} URL", "NAME", "KIND", "LIVE");
        for r in &names {
            let _ = writeln!(
                s,
                "{:<24} {:<5} {:<5} {}",
                fit(&r.name, 24),
                r.kind,
                if r.live { "yes" } else { "no" },
                fit(&r.url, 43)
            );
        }
    }
    let unreserved: Vec<_> = live
        .iter()
        .filter(|l| !names.iter().any(|r| r.name == l.name))
        .collect();
    if !unreserved.is_empty() {
        s.push_str("\nLive tunnels on names you have not reserved:\n");
        for l in unreserved {
            let _ = writeln!(
                s,
                "{:<24} {:<5} {:>8} req  {}",
                fit(&l.name, 24),
                l.kind,
                l.requests,
                fit(&l.url, 36)
            );
        }
    }
    Ok(Output::ok(s))
}

async fn reserve(t: &Tenants, c: &Caller, a: &mut Args) -> Res {
    let kind = a.flag("kind")?.unwrap_or_else(|| "http".into());
    let [name] = a.positional(1, "reserve NAME [--kind http|tls|tcp] [--json]")? else {
        return Err(Output::fail("usage: reserve NAME", 2));
    };
    let r = t.reserve(c, None, name, &kind).await?;
    if a.json {
        return Ok(json(&r));
    }
    Ok(Output::ok(format!(
        "reserved {} ({}): {}\n",
        r.name, r.kind, r.url
    )))
}

async fn release(t: &Tenants, c: &Caller, a: &Args) -> Res {
    let [name] = a.positional(1, "release NAME [--json]")? else {
        return Err(Output::fail("usage: release NAME", 2));
    };
    let r = t.release(c, name).await?;
    if a.json {
        return Ok(json(&r));
    }
    Ok(Output::ok(format!("released {}\n", r.name)))
}

async fn keys(t: &Tenants, c: &Caller, a: &mut Args, stdin: &[u8]) -> Res {
    match a.words.first().map(String::as_str) {
        None => {
            let keys = t.keys(c, None).await?;
            if a.json {
                return Ok(json(&keys));
            }
            let mut s = format!("{:<51} {:<11} COMMENT\n", "FINGERPRINT", "TYPE");
            for k in keys {
                let _ = writeln!(
                    s,
                    "{:<51} {:<11} {}",
                    k.fingerprint,
                    fit(&k.algorithm, 11),
                    fit(&k.comment, 16)
                );
            }
            Ok(Output::ok(s))
        }
        Some("add") => {
            a.words.remove(0);
            a.positional(0, "keys add < KEY.pub")?;
            let text = String::from_utf8_lossy(stdin);
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            if lines.is_empty() {
                return Err(Output::fail(
                    "give the public key on stdin: ssh HOST keys add < ~/.ssh/id_ed25519.pub",
                    2,
                ));
            }
            if lines.iter().any(|l| l.contains("PRIVATE KEY")) {
                return Err(Output::fail(
                    "that is a private key; give the .pub file instead",
                    2,
                ));
            }
            let mut added = Vec::new();
            for line in lines {
                let key = crate::keys::parse_public_key(line).map_err(|e| Output::fail(e, 1))?;
                added.push(t.add_key(c, None, key).await?);
            }
            if a.json {
                return Ok(json(&added));
            }
            Ok(Output::ok(
                added
                    .iter()
                    .map(|k| format!("added {} {}\n", k.algorithm, k.fingerprint))
                    .collect(),
            ))
        }
        Some("rm") => {
            a.words.remove(0);
            let [fp] = a.positional(1, "keys rm FINGERPRINT")? else {
                return Err(Output::fail("usage: keys rm FINGERPRINT", 2));
            };
            let k = t.remove_key(c, fp).await?;
            if a.json {
                return Ok(json(&k));
            }
            Ok(Output::ok(format!("removed {}\n", k.fingerprint)))
        }
        Some(other) => Err(Output::fail(
            format!(
                "unknown keys command {:?}; use keys, keys add or keys rm",
                fit(other, 20)
            ),
            2,
        )),
    }
}

async fn tokens(t: &Tenants, c: &Caller, a: &mut Args) -> Res {
    match a.words.first().map(String::as_str) {
        None => {
            let list = t.tokens(c, None).await?;
            if a.json {
                return Ok(json(&list));
            }
            let mut s = format!(
                "{:>5} {:<24} {:<6} {:<9} EXPIRES\n",
                "ID", "NAME", "SCOPE", "HINT"
            );
            for k in list {
                let exp = k
                    .expires_at
                    .map_or("never".to_owned(), |e| warren_tenants::when(Some(e)));
                let _ = writeln!(
                    s,
                    "{:>5} {:<24} {:<6} {:<9} {}",
                    k.id,
                    fit(&k.name, 24),
                    k.scope,
                    k.hint,
                    exp
                );
            }
            Ok(Output::ok(s))
        }
        Some("create") => {
            a.words.remove(0);
            let scope = a.flag("scope")?.unwrap_or_else(|| "write".into());
            let expires = a.flag("expires")?;
            let [name] =
                a.positional(1, "tokens create NAME [--scope read|write] [--expires 30d]")?
            else {
                return Err(Output::fail("usage: tokens create NAME", 2));
            };
            let scope = scope.parse()?;
            let lifetime = expires
                .as_deref()
                .map(warren_tenants::parse_duration)
                .transpose()?;
            let created = t.create_token(c, None, name, scope, lifetime).await?;
            if a.json {
                return Ok(json(&created));
            }
            Ok(Output::ok(format!(
                "token {:?} (scope {}): shown this once, store it now\n{}\n",
                created.info.name, created.info.scope, created.token
            )))
        }
        Some("revoke") => {
            a.words.remove(0);
            let [id] = a.positional(1, "tokens revoke ID")? else {
                return Err(Output::fail("usage: tokens revoke ID", 2));
            };
            let id: i64 = id
                .parse()
                .map_err(|_| Output::fail(format!("{id:?} is not a token id"), 2))?;
            let k = t.revoke_token(c, id).await?;
            if a.json {
                return Ok(json(&k));
            }
            Ok(Output::ok(format!("revoked token {} ({})\n", k.id, k.name)))
        }
        Some(other) => Err(Output::fail(
            format!(
                "unknown tokens command {:?}; use tokens, tokens create or tokens revoke",
                fit(other, 20)
            ),
            2,
        )),
    }
}

async fn requests(t: &Tenants, c: &Caller, a: &Args) -> Res {
    let [name] = a.positional(1, "requests NAME [--json]")? else {
        return Err(Output::fail("usage: requests NAME", 2));
    };
    let list = t.requests(c, name, 1000).await?;
    if a.json {
        return Ok(json(&list));
    }
    let mut s = String::new();
    for r in list.iter().rev().take(50).rev() {
        let _ = writeln!(
            s,
            "{:<7} {:<40} {:>3} {:>6}ms {:>9}B {}",
            fit(&r.method, 7),
            fit(&r.path, 40),
            r.status,
            r.duration_ms,
            r.bytes_out,
            fit(&r.visitor, 15)
        );
    }
    if s.is_empty() {
        s.push_str("No requests yet.\n");
    }
    Ok(Output::ok(s))
}

async fn qr(t: &Tenants, c: &Caller, a: &Args) -> Res {
    let [name] = a.positional(1, "qr NAME")? else {
        return Err(Output::fail("usage: qr NAME", 2));
    };
    let url = match t.reservation(c, name).await {
        Ok(r) => r.url,
        Err(ServiceError::NotFound(_)) => {
            // A live random name of the caller's is not reserved, but has a URL too.
            t.tunnels(c, false)
                .await
                .ok()
                .and_then(|l| l.into_iter().find(|l| &l.name == name))
                .map(|l| l.url)
                .ok_or_else(|| {
                    Output::fail(format!("no reservation or live tunnel named {name:?}"), 1)
                })?
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        return Ok(json(&serde_json::json!({ "url": url })));
    }
    let code = qrcode::QrCode::new(url.as_bytes()).map_err(|e| Output::fail(e, 1))?;
    let art = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    Ok(Output::ok(format!("{art}\n{url}\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        let w = |s: &str| split(s).unwrap_or_default();
        assert_eq!(w("ls --json"), ["ls", "--json"]);
        assert_eq!(w("  reserve   chat "), ["reserve", "chat"]);
        assert_eq!(
            w(r#"tokens create "my laptop" --scope=read"#),
            ["tokens", "create", "my laptop", "--scope=read"]
        );
        assert_eq!(w("a 'b c' d\\ e"), ["a", "b c", "d e"]);
        assert_eq!(w("''"), [""]);
        assert!(split("a 'b").is_err());
        assert!(split("a \u{7}").is_err());
        assert_eq!(w(""), Vec::<String>::new());
    }

    #[test]
    fn flags_and_positionals() {
        let mut a = Args::parse(&[
            "chat".into(),
            "--kind".into(),
            "tls".into(),
            "--json".into(),
        ]);
        assert!(a.json);
        assert_eq!(a.flag("kind").ok().flatten().as_deref(), Some("tls"));
        assert!(a.positional(1, "u").is_ok());
        let mut b = Args::parse(&["--kind".into()]);
        assert_eq!(b.flag("kind").err().map(|o| o.code), Some(2));
        let c = Args::parse(&["x".into(), "--bogus".into()]);
        assert!(
            c.positional(1, "u")
                .err()
                .is_some_and(|o| o.stderr.contains("unknown option --bogus"))
        );
    }

    #[test]
    fn help_fits_80_columns() {
        assert!(HELP.lines().all(|l| l.chars().count() <= 80));
    }
}
