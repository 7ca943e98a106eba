//! Settings. Each has a default; a TOML file overrides defaults, the environment overrides the
//! file, and flags override the environment.
//!
//! Files, bottom-up: `settings` (the `Config` struct, its defaults, `ConfigError`), `address`
//! (the syntax of `entry_addresses`), `api` (the server API's settings), `cluster` (the
//! cluster's settings), `env` (`MISSIVE_*`
//! variables), `validate` (every range, checked once); this file reads them in that order.

mod address;
mod api;
mod cluster;
mod env;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

use clap::Parser;

pub use address::{valid_host as address_host_is_valid, Address, WS_PATH};
pub use api::parse_host_port;
pub use settings::{Config, ConfigError, HookFail, Preview, PREVIEW_CHARS};

use crate::store::Durability;

/// Command-line flags of `missived`; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "missived",
    version,
    about = "The Missive instant-messaging server"
)]
pub struct Args {
    /// TOML configuration file (settings as in docs/configuration.md).
    #[arg(long, env = "MISSIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeat, or comma-separate in the environment).
    #[arg(long, env = "MISSIVE_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Data directory.
    #[arg(long, env = "MISSIVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Token secret.
    #[arg(long, env = "MISSIVE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Durability: sync or async.
    #[arg(long, env = "MISSIVE_DURABILITY")]
    pub durability: Option<String>,
    /// Heartbeat interval in seconds.
    #[arg(long, env = "MISSIVE_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u32>,
    /// Log filter, e.g. info or missive=debug.
    #[arg(long, env = "MISSIVE_LOG")]
    pub log: Option<String>,
    /// TLS certificate chain (PEM file).
    #[arg(long, env = "MISSIVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM file).
    #[arg(long, env = "MISSIVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// HTTP API address (empty: no HTTP API).
    #[arg(long, env = "MISSIVE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// HTTP API key (Authorization: Bearer KEY).
    #[arg(long, env = "MISSIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Connections moved away per second while draining.
    #[arg(long, env = "MISSIVE_DRAIN_RATE_PER_SEC")]
    pub drain_rate_per_sec: Option<u32>,
    /// NATS servers of a cluster (docs/CLUSTER.md), comma-separated; empty: a single node.
    #[arg(long, env = "MISSIVE_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's name in the cluster.
    #[arg(long, env = "MISSIVE_NODE_ID")]
    pub node_id: Option<String>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Restore the backup in BACKUP_DIR (a directory `POST /v1/backups` wrote) into the data
    /// directory (--data-dir), which must not exist or be empty; check the restored store and
    /// exit (docs/operations.md, "Backup and restore").
    #[arg(long, value_name = "BACKUP_DIR")]
    pub restore: Option<PathBuf>,
    /// Check a word list file for the word filter (`word_filter`), print what it holds and exit:
    /// 0 if the server would load it, 1 (with the line at fault) if not.
    #[arg(long, value_name = "FILE")]
    pub check_words: Option<PathBuf>,
}

impl Config {
    /// Defaults, then the file, then `MISSIVE_<SETTING>` environment variables, then flags.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        Config::load_with_env(args, std::env::vars())
    }

    /// [`Config::load`] with the environment given (`(name, value)` pairs).
    pub fn load_with_env(
        args: &Args,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let mut config = config.with_env(env)?;
        if !args.listen.is_empty() {
            config.listen = args.listen.clone();
        }
        if let Some(d) = &args.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(s) = &args.secret {
            config.secret = Some(s.clone());
        }
        if let Some(d) = &args.durability {
            config.durability = match d.as_str() {
                "sync" => Durability::Sync,
                "async" => Durability::Async,
                other => {
                    return Err(ConfigError(format!(
                        "durability: {other:?} is not \"sync\" or \"async\""
                    )))
                }
            };
        }
        if let Some(h) = args.heartbeat_secs {
            config.heartbeat_secs = h;
        }
        if let Some(l) = &args.log {
            config.log = l.clone();
        }
        if let Some(c) = &args.tls_cert {
            config.tls_cert = Some(c.clone());
        }
        if let Some(k) = &args.tls_key {
            config.tls_key = Some(k.clone());
        }
        if let Some(h) = &args.http_listen {
            config.http_listen = h.clone();
        }
        if let Some(k) = &args.api_key {
            config.api_key = Some(k.clone()).filter(|k| !k.is_empty());
        }
        if let Some(r) = args.drain_rate_per_sec {
            config.drain_rate_per_sec = r;
        }
        if let Some(c) = &args.cluster {
            config.cluster = c.clone();
        }
        if let Some(n) = &args.node_id {
            config.node_id = n.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("missived").chain(list.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "listen = [\"127.0.0.1:7000\"]\nheartbeat_secs = 12\nrecall_window_secs = 5\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let from_file = Config::load(&args(&["--config", path])).unwrap();
        assert_eq!(from_file.listen, vec!["127.0.0.1:7000"]);
        assert_eq!(from_file.heartbeat_secs, 12);
        assert_eq!(from_file.recall_window_secs, 5);
        assert_eq!(from_file.max_devices_per_user, 5, "default kept");
        let flagged = Config::load(&args(&[
            "--config",
            path,
            "--heartbeat-secs",
            "7",
            "--listen",
            "127.0.0.1:7001",
        ]))
        .unwrap();
        assert_eq!(flagged.heartbeat_secs, 7);
        assert_eq!(flagged.listen, vec!["127.0.0.1:7001"]);
        assert_eq!(flagged.recall_window_secs, 5);
    }

    #[test]
    fn worker_threads_leave_a_core_to_the_store_unless_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = Config::default();
        assert_eq!(auto.worker_threads(), (cores - 1).max(1));
        let set = Config {
            worker_threads: 3,
            ..Config::default()
        };
        assert_eq!(set.worker_threads(), 3);
        let env = [("MISSIVE_WORKER_THREADS".to_string(), "2".to_string())];
        let from_env = Config::load_with_env(&args(&[]), env).unwrap();
        assert_eq!(from_env.worker_threads(), 2);
    }

    #[test]
    fn redirect_targets_are_host_and_port() {
        assert_eq!(
            parse_host_port("missive-2.example:443"),
            Some(("missive-2.example".into(), 443))
        );
        assert_eq!(parse_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        for bad in ["", "host", "host:", ":443", "host:0", "host:70000", "a b:1"] {
            assert_eq!(parse_host_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "heartbeat_sec = 3\n").unwrap();
        let err = Config::load(&args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_sec"), "{err}");
        let err = Config::load(&args(&["--durability", "maybe"])).unwrap_err();
        assert!(err.to_string().contains("durability"), "{err}");
        let err = Config::load(&args(&["--heartbeat-secs", "0"])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_secs"), "{err}");
        let err = Config::load(&args(&["--listen", "nowhere"])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
