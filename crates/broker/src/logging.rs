//! The broker's log: which lines (`log`, else `RUST_LOG`), in which shape (`log_format`), and
//! whether with colours (only on a terminal).
//!
//! Under systemd stderr is the journal, and in a container it is a pipe to a log shipper:
//! neither wants ANSI colour codes, and a shipper wants one JSON object per line.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::Config;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal only).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message` and the event's other
    /// fields, `target`, and the spans it happened in (`span`, `spans`).
    Json,
}

/// The log filter in force: the `log` setting when one is given as a flag or `BROKER_LOG`
/// (`flag`), else `RUST_LOG` (`rust_log`, what every Rust developer tries first), else the
/// config file's `log` (`file`), else `info`. `RUST_LOG` sits below the flag so a unit's
/// explicit `--log` is never overridden by a stray variable, and above the file so that
/// `RUST_LOG=debug broker serve` works on a box whose config file says `info`.
pub fn filter(flag: Option<&str>, rust_log: Option<&str>, file: Option<&str>) -> String {
    flag.or(rust_log.filter(|s| !s.trim().is_empty()))
        .or(file)
        .unwrap_or("info")
        .to_owned()
}

/// Installs the global subscriber for `serve`. Colours only when stderr is a terminal and
/// `NO_COLOR` is unset (no-color.org): journald and pipes get plain text.
pub fn init(config: &Config) -> Result<()> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(&config.log).context("log: bad filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything non-empty.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_beats_rust_log_which_beats_the_file() {
        assert_eq!(filter(None, None, None), "info");
        assert_eq!(filter(None, None, Some("warn")), "warn");
        assert_eq!(filter(None, Some("debug"), Some("warn")), "debug");
        assert_eq!(filter(None, Some(" "), Some("warn")), "warn");
        assert_eq!(filter(Some("error"), Some("debug"), Some("warn")), "error");
    }

    #[test]
    fn no_colour_off_a_terminal() {
        assert!(!colour(false));
    }
}
