//! `broker nodes`: the brokers sharing this database, as the database last heard of them.

use anyhow::Result;

use crate::accounts::tenants;
use crate::config::Config;

/// Prints every node: name, addresses, up since, last heartbeat, tunnels held; `json` prints
/// the API's node objects.
pub async fn nodes(config: &Config, json: bool) -> Result<()> {
    let all = tenants(config)
        .await?
        .nodes(&warren_tenants::Caller::operator())
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<6} {:<22} {:<22} {:<10} {:<12} TUNNELS",
        "NODE", "STATE", "PUBLIC", "CLUSTER", "UP", "HEARTBEAT"
    );
    for n in all {
        let heard = format!("{} ago", ago(n.silent_ms));
        println!(
            "{:<20} {:<6} {:<22} {:<22} {:<10} {:<12} {}",
            n.name,
            if n.alive { "alive" } else { "dead" },
            n.public_addr,
            n.cluster_addr.as_deref().unwrap_or("-"),
            ago(n.heartbeat_at_ms - n.started_at_ms + n.silent_ms),
            heard,
            n.tunnels
        );
    }
    Ok(())
}

/// `850ms`, `12s`, `5m`, `3h`, `2d`.
fn ago(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1_000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_at_a_glance() {
        let shown: Vec<String> = [-5, 850, 12_400, 300_000, 3 * 3_600_000, 2 * 86_400_000]
            .into_iter()
            .map(super::ago)
            .collect();
        assert_eq!(shown, ["0ms", "850ms", "12s", "5m", "3h", "2d"]);
    }
}
