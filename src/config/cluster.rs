//! The cluster's settings (`cluster`, `node_id`, `cluster_*`): checks.

use super::address::Address;
use super::settings::{Config, ConfigError};

impl Config {
    /// Whether this server is a node of a cluster.
    pub fn clustered(&self) -> bool {
        !self.cluster.is_empty()
    }

    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_owned()));
        if !(1..=1024).contains(&self.cluster_partitions) {
            return bad("cluster_partitions: must be 1..=1024");
        }
        if !(1..=5).contains(&self.cluster_replicas) {
            return bad("cluster_replicas: must be 1..=5 (JetStream's limit)");
        }
        if !(1_000..=60_000).contains(&self.cluster_lease_ttl_ms) {
            return bad("cluster_lease_ttl_ms: must be 1000..=60000");
        }
        if self.cluster_lease_renew_ms == 0
            || self.cluster_lease_renew_ms * 3 > self.cluster_lease_ttl_ms
        {
            return bad(
                "cluster_lease_renew_ms: must be at least 1 and at most a third of \
                 cluster_lease_ttl_ms (an owner gets three tries before its lease runs out)",
            );
        }
        if self.cluster_lease_margin_ms * 20 < self.cluster_lease_ttl_ms {
            return bad(
                "cluster_lease_margin_ms: must be at least a twentieth of cluster_lease_ttl_ms \
                 (it absorbs the difference between two machines' clock rates)",
            );
        }
        if self.cluster_lease_margin_ms + self.cluster_lease_renew_ms >= self.cluster_lease_ttl_ms {
            return bad(
                "cluster_lease_margin_ms: must leave room for a renewal: margin + renew < ttl",
            );
        }
        if self.cluster_snapshot_records != 0 && self.cluster_snapshot_records < 10 {
            return bad(
                "cluster_snapshot_records: must be 0 (no snapshots) or at least 10 (a snapshot \
                 per record or two would upload the whole store all the time)",
            );
        }
        for a in &self.cluster_advertise {
            Address::parse(a)
                .map_err(|why| ConfigError(format!("cluster_advertise: {a:?}: {why}")))?;
        }
        if !self.clustered() {
            return Ok(());
        }
        for url in self.cluster.split(',').map(str::trim) {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) || url.len() < 8 {
                return Err(ConfigError(format!(
                    "cluster: {url:?} is not a NATS URL like nats://127.0.0.1:4222"
                )));
            }
        }
        let id_ok = (1..=32).contains(&self.node_id.len())
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return bad(
                "node_id: a cluster node needs --node-id (1 to 32 of A-Z a-z 0-9 _ -), unique \
                 in the cluster and the same across restarts",
            );
        }
        if self.secret.as_deref().is_none_or(str::is_empty) {
            return bad(
                "secret: a cluster node needs --secret (the same on every node): tokens minted \
                 by one node must be accepted by all",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Config {
        Config {
            cluster: "nats://127.0.0.1:4222".into(),
            node_id: "n1".into(),
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            ..Config::default()
        }
    }

    #[test]
    fn a_single_node_needs_nothing_and_a_cluster_node_needs_its_id_and_the_secret() {
        Config::default().validate().unwrap();
        node().validate().unwrap();
        for (c, setting) in [
            (
                Config {
                    node_id: String::new(),
                    ..node()
                },
                "node_id",
            ),
            (
                Config {
                    node_id: "n 1".into(),
                    ..node()
                },
                "node_id",
            ),
            (
                Config {
                    secret: None,
                    ..node()
                },
                "secret",
            ),
            (
                Config {
                    cluster: "127.0.0.1:4222".into(),
                    ..node()
                },
                "cluster",
            ),
            (
                Config {
                    cluster_partitions: 0,
                    ..node()
                },
                "cluster_partitions",
            ),
            (
                Config {
                    cluster_replicas: 7,
                    ..node()
                },
                "cluster_replicas",
            ),
            (
                Config {
                    cluster_lease_renew_ms: 2_000,
                    ..node()
                },
                "cluster_lease_renew_ms",
            ),
            (
                Config {
                    cluster_lease_margin_ms: 4_000,
                    ..node()
                },
                "cluster_lease_margin_ms",
            ),
            (
                Config {
                    cluster_lease_margin_ms: 100,
                    ..node()
                },
                "cluster_lease_margin_ms",
            ),
            (
                Config {
                    cluster_snapshot_records: 9,
                    ..node()
                },
                "cluster_snapshot_records",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            let named = format!("configuration: {setting}:");
            assert!(err.starts_with(&named), "{setting}: {err}");
        }
    }
}
