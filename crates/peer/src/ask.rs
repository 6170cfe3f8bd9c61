//! Questions one node asks another about a tunnel the other holds: its request log (the
//! recent entries, then each new one) and its counters. Each is a stream of its own on the
//! other node's cluster listener, opened with a PROXY v2 `LOCAL` header and a mark of ours.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use warren_registry::{LogFeed, OpenError, RouteStats};

use crate::Dialer;
use crate::wire::{self, LogRecord, NOT_HERE};

/// The most recent entries a log reading may bring: a log far larger than any a broker keeps
/// (`request_log_entries`, default 1,000), so that a peer gone wrong cannot fill this node.
const MAX_RECENT: usize = 100_000;

impl Dialer {
    /// The counters of `names` on the node at `addr`, for the names it holds.
    pub(crate) async fn stats(
        &self,
        addr: &str,
        names: &[String],
    ) -> Result<HashMap<String, RouteStats>, OpenError> {
        let away = |e: &dyn std::fmt::Display| OpenError::Away(format!("{addr}: {e}"));
        let mut tls = self.link.connect(addr).await.map_err(|e| away(&e))?;
        let mut ask = wire::stats_header().map_err(|e| away(&e))?;
        for name in names {
            ask.extend_from_slice(name.as_bytes());
            ask.push(b'\n');
        }
        ask.push(b'\n');
        tls.write_all(&ask).await.map_err(|e| away(&e))?;
        tls.flush().await.map_err(|e| away(&e))?;
        if let Err((_, why)) = wire::read_status(&mut tls).await.map_err(|e| away(&e))? {
            return Err(OpenError::Unreachable(why));
        }
        let mut r = tokio::io::BufReader::new(tls);
        let mut stats = HashMap::new();
        let mut buf = Vec::new();
        loop {
            let line = wire::read_record(&mut r, &mut buf)
                .await
                .map_err(|e| away(&e))?;
            let Some(line) = line else {
                return Ok(stats);
            };
            let Some((name, s)) = wire::parse_stats_line(line) else {
                return Err(away(&"a line of counters that does not parse"));
            };
            stats.insert(name, s);
        }
    }

    /// The request log of `name` kept on the node at `addr`, read for `owner`: the recent
    /// entries, then (with `follow`) each one the node records after them, handed on by a task
    /// that ends when the returned feed is dropped or the node stops sending.
    pub(crate) async fn read_log(
        &self,
        addr: &str,
        name: &str,
        owner: i64,
        follow: bool,
    ) -> Result<LogFeed, OpenError> {
        let away = |e: &dyn std::fmt::Display| OpenError::Away(format!("{addr}: {e}"));
        let mut tls = self.link.connect(addr).await.map_err(|e| away(&e))?;
        let header = wire::log_header(name, owner, follow).map_err(|e| away(&e))?;
        tls.write_all(&header).await.map_err(|e| away(&e))?;
        tls.flush().await.map_err(|e| away(&e))?;
        match wire::read_status(&mut tls).await.map_err(|e| away(&e))? {
            Ok(()) => {}
            // No log of that name for that owner there: nothing to retry.
            Err((NOT_HERE, why)) => return Err(OpenError::Refused(why)),
            Err((_, why)) => return Err(OpenError::Unreachable(why)),
        }
        let mut r = tokio::io::BufReader::new(tls);
        let mut recent = Vec::new();
        let mut record = Vec::new();
        loop {
            match next_log_record(&mut r, &mut record).await {
                Ok(Some(LogRecord::Entry(_))) if recent.len() >= MAX_RECENT => {
                    return Err(away(&"more recent entries than any log keeps"));
                }
                Ok(Some(LogRecord::Entry(e))) => recent.push(Arc::new(e)),
                Ok(Some(LogRecord::Now)) => break,
                Ok(Some(LogRecord::Lagged(_))) => {}
                Ok(None) => return Err(away(&"the log ended before its recent entries")),
                Err(e) => return Err(away(&e)),
            }
        }
        if !follow {
            return Ok(LogFeed::relayed(recent, None));
        }
        let (tx, rx) = mpsc::channel(warren_registry::SUBSCRIBER_BACKLOG);
        tokio::spawn(async move {
            let mut record = Vec::new();
            loop {
                let next = tokio::select! {
                    next = next_log_record(&mut r, &mut record) => next,
                    // The reader went away: so does the stream, which the other node sees.
                    _ = tx.closed() => return,
                };
                let Ok(Some(next)) = next else { return };
                // A reader slower than the other node sends makes this wait, then the other
                // node's follower fall behind, which it tells as `Lagged`.
                if let Some(followed) = wire::followed(next)
                    && tx.send(followed).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(LogFeed::relayed(recent, Some(rx)))
    }
}

/// The next record of a log reading: `None` at its end; an error for one too long or unknown.
async fn next_log_record(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    record: &mut Vec<u8>,
) -> std::io::Result<Option<LogRecord>> {
    let Some(line) = wire::read_record(r, record).await? else {
        return Ok(None);
    };
    wire::parse_log_record(line)
        .map(Some)
        .ok_or_else(|| std::io::Error::other("a log record of no known kind"))
}
