//! The broker's log: which lines (`log`, else `RUST_LOG`), in which shape (`log_format`), and
//! whether with colours (only on a terminal).
//!
//! Under systemd stderr is the journal, and in a container it is a pipe to a log shipper:
//! neither wants ANSI colour codes, and a shipper wants one JSON object per line.

use std::io::IsTerminal;

use anyhow::{Context as _, Result};
use serde::Deserialize;
use tracing::{Level, Metadata, subscriber::Interest};
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::layer::{Context, Filter, Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

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
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match config.log_format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(
            layer
                .with_filter(env_filter)
                .with_filter(quiet_slow_acquires()),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// sqlx's pool warns about every acquire slower than its threshold (2 s). In a reconnect storm
/// of 10,000 owners that was 9,267 lines in two minutes (`bench/results/scale-20261203T180655`),
/// drowning everything else; one such line per [`SLOW_ACQUIRE_EVERY`] says the same. Every
/// other line passes untouched.
fn quiet_slow_acquires<S: tracing::Subscriber>() -> impl Filter<S> {
    let throttle = warren_admit::Throttle::new(SLOW_ACQUIRE_EVERY);
    DynFilterFn::new(move |meta: &Metadata<'_>, _cx: &Context<'_, S>| {
        !(is_slow_acquire(meta)) || throttle.hit().is_some()
    })
    .with_callsite_filter(|meta| {
        if is_slow_acquire(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    })
}

/// At most one of sqlx's slow-acquire warnings this often.
const SLOW_ACQUIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// That warning: its target, and the field only it has (sqlx logs other acquire lines there).
fn is_slow_acquire(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target() == "sqlx::pool::acquire"
        && *meta.level() == Level::WARN
        && meta.fields().field("slow_acquire_threshold_secs").is_some()
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

    /// A writer into a shared buffer, for reading back what the layer wrote.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_storm_of_slow_acquire_warnings_is_one_line_and_nothing_else_is_touched() {
        let out = Buffer::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_filter(quiet_slow_acquires());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..500 {
                tracing::warn!(
                    target: "sqlx::pool::acquire",
                    acquired_after_secs = 2.5,
                    slow_acquire_threshold_secs = 2.0,
                    "acquired connection, but time to acquire exceeded slow threshold"
                );
                tracing::warn!(target: "sqlx::pool::acquire", n = i, "another warning");
                tracing::info!(n = i, "ours");
            }
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("exceeded slow threshold"), 1, "{text}");
        assert_eq!(count("another warning"), 500);
        assert_eq!(count("ours"), 500);
    }
}
