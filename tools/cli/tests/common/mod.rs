//! What the CLI's end-to-end tests share: a real missived, in-process, on 127.0.0.1.

use missive::config::Config;
use missive::store::Durability;
use missive::{Server, ServerHandle};

/// A server on a free port of 127.0.0.1 with a fresh data directory, no HTTP API and async
/// durability, after `tweak` adjusted its configuration; the server, its address and the
/// directory (kept alive as long as the caller holds it).
pub async fn server(tweak: impl FnOnce(&mut Config)) -> (ServerHandle, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: vec!["127.0.0.1:0".into()],
        data_dir: dir.path().to_path_buf(),
        durability: Durability::Async,
        http_listen: String::new(),
        ..Config::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.unwrap();
    let addr = server.local_addrs()[0].to_string();
    (server, addr, dir)
}
