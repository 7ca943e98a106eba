//! The peer mode against a real mosquitto: a broker of its own on a free loopback port, with
//! the configuration `suite.sh` uses, then `missive-load mqtt chat` for 3 s at a modest rate;
//! every message must be acked and received exactly once, and the summary must carry the
//! figures the suite compares. Needs `mosquitto` on the PATH (`apt-get install mosquitto`;
//! `.ci/run` installs it).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A mosquitto process with its own configuration and log, killed when dropped.
struct Mosquitto {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = common::free_port();
        let dir = common::test_dir("missive-load-mqtt-test", port);
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\n"
            ),
        )
        .expect("mosquitto.conf");
        let log = File::create(dir.join("mosquitto.log")).expect("mosquitto.log");
        let child = match Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start mosquitto ({e}): the peer mode's test needs it \
                 (apt-get install mosquitto)"
            ),
        };
        let mut broker = Mosquitto { child, dir, port };
        let log = broker.dir.join("mosquitto.log");
        common::wait_listening(
            &mut broker.child,
            port,
            Duration::from_secs(10),
            "mosquitto",
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `missive-load` with `args`; its exit status, stdout and stderr. Killed after `limit`.
fn missive_load(args: &[String], dir: &Path, limit: Duration) -> (ExitStatus, String, String) {
    let (out, err) = (dir.join("load.out"), dir.join("load.err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_missive-load"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("load.out"))
        .stderr(File::create(&err).expect("load.err"))
        .spawn()
        .expect("missive-load starts");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let status = common::wait_exit(&mut child, limit, "missive-load", || read(&err));
    (status, read(&out), read(&err))
}

#[test]
fn mqtt_chat_against_mosquitto_delivers_every_message_once() {
    let broker = Mosquitto::start();
    let (users, rate, duration) = (40u64, 200u64, 3u64);
    let args: Vec<String> = [
        "mqtt",
        "chat",
        "--addr",
        &format!("127.0.0.1:{}", broker.port),
        "--users",
        &users.to_string(),
        "--rate",
        &rate.to_string(),
        "--duration",
        &duration.to_string(),
        "--grace",
        "10",
        "--size",
        "128",
        "--server-pid",
        &broker.child.id().to_string(),
        "--threads",
        "1",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, stdout, stderr) = missive_load(&args, &broker.dir, Duration::from_secs(60));
    assert!(
        status.success(),
        "missive-load mqtt chat failed ({status}):\n{stderr}\nmosquitto: {}",
        broker.log()
    );
    let r = common::summary(&stdout, &stderr);
    let n = |key: &str| common::number(&r, key);
    let total = rate * duration;
    assert_eq!(r["scenario"], "mqtt-chat");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(n("users"), users);
    assert_eq!(n("content size"), 128);
    assert_eq!(n("sent"), total);
    assert_eq!(n("acked"), total, "every publish acked (PUBACK)");
    assert_eq!(n("delivered"), total, "every message received");
    assert_eq!(n("lost (acked, never delivered)"), 0);
    assert_eq!(n("duplicated deliveries"), 0);
    assert_eq!(n("misrouted"), 0);
    assert_eq!(n("send errors"), 0);
    assert!(r["ack throughput"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(
        r["delivery throughput"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    for key in ["delivery latency", "ack latency"] {
        let l = &r[key];
        assert_eq!(l["count"].as_u64(), Some(total), "{key}: {l}");
        let q = |name: &str| {
            l[name]
                .as_f64()
                .unwrap_or_else(|| panic!("no {key} {name} in the summary: {l}"))
        };
        let (p50, p99, p999, max) = (q("p50_ms"), q("p99_ms"), q("p99.9_ms"), q("max_ms"));
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "{key}: {l}"
        );
        // On loopback at 200 msg/s, a median of a second would be a harness or broker fault.
        assert!(p50 < 1000.0, "{key}: {l}");
    }
    assert!(
        r["server CPU while sending"].as_f64().is_some(),
        "the broker's CPU (from /proc) is reported: {r}"
    );
}
