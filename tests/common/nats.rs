//! Real `nats-server` processes with JetStream for the cluster's tests (Debian package
//! `nats-server`; `.ci/run` installs it).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::free_port;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// Three NATS servers with JetStream, routed to each other as one cluster.
pub struct Nats {
    pub servers: Vec<Proc>,
    pub urls: String,
}

pub fn nats_cluster(dir: &Path) -> Nats {
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = route
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let servers = (0..3)
        .map(|i| {
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-n", &format!("nats{i}")])
                .args(["-p", &client[i].to_string()])
                .arg("-sd")
                .arg(dir.join(format!("nats{i}")))
                .args(["--cluster_name", "missive-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", route[i])])
                .args(["--routes", &routes])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts (apt-get install nats-server)");
            Proc(child)
        })
        .collect();
    let urls = client
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    Nats { servers, urls }
}

/// The partitions' log on `urls`, with 3 replicas, once the NATS cluster has elected its
/// JetStream leader (within seconds of starting).
pub async fn open_log(urls: &str) -> missive::cluster::log::Log {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match missive::cluster::log::Log::open(js.clone(), 3).await {
            Ok(log) => return log,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no stream: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
    }
}
