//! Reading a password: from a terminal, asked twice with echo off; from a pipe (scripts), the
//! first line of stdin.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};

/// A password for `what`, from stdin when it is not a terminal, else prompted for twice.
pub fn password(what: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']);
        if pw.is_empty() {
            bail!("no password on stdin (give it as the first line)");
        }
        return Ok(pw.to_owned());
    }
    let first = hidden(&format!("Password for {what}: "))?;
    let again = hidden("Again: ")?;
    if first != again {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// One line from the terminal with echo off (`rpassword`: the terminal's own no-echo mode,
/// restored even when reading fails).
fn hidden(prompt: &str) -> Result<String> {
    rpassword::prompt_password(prompt).context("reading the password")
}
