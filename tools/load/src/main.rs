//! `missive-load`: load scenarios against a Missive server.
//!
//! Each scenario is a subcommand: `connect` (many idle logged-in connections), `chat` (one-to-one
//! messages at an open-loop rate, with loss/duplication checks and latency percentiles),
//! `offline` (catch-up SYNC of a queued inbox), `fanout` (group messages) and `media`
//! (concurrent resumable uploads over HTTP, then ranged downloads, every byte checked). Every
//! run is bounded in time, prints a progress line to stderr once a second and a summary table
//! at the end (`--json` for the full result as JSON), and exits non-zero if anything was lost,
//! duplicated or failed: 1 for a failed run, 2 when the server lacks a feature the scenario
//! needs. `abuse` is different: it starts a server of its own for each attack of issue #18
//! and reports what the attack cost (see `missive-load abuse --help`). `hook` is a before-send
//! hook that allows everything, for measuring what a hook costs the server. `mqtt` is the peer
//! mode: `mqtt chat|fanout|offline|connect` run the same workloads against an MQTT broker
//! (mosquitto), with the same options and summary keys, for a side-by-side run (issue #24).

mod abuse;
mod chat;
mod common;
mod connect;
mod fanout;
mod hook;
mod media;
mod mqtt;
mod offline;
mod stats;
mod unsupported;
mod verify;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use common::{Common, Env};
use unsupported::Unsupported;

const AFTER_HELP: &str = "\
Tokens are minted with the server's secret (--secret S, or the file <data-dir>/secret), for users
named <prefix>-<role>-<n>; every run uses a fresh random prefix unless --prefix is given.

Exit codes: 0 all good; 1 something was lost, duplicated, misrouted or failed (see FAILED lines);
2 the server does not support what the scenario needs (e.g. groups).

Examples:
  missive-load connect --addr 127.0.0.1:9443 --data-dir /tmp/bench-data -n 5000 --rate 1000 --duration 30 --server-pid 1234
  missive-load chat --addr 127.0.0.1:9443 --data-dir /tmp/bench-data --users 200 --rate 2000 --duration 20
  missive-load chat --addrs 127.0.0.1:9443,127.0.0.1:9444 --secret S --users 1000 --rate 5000 --duration 20 --grace 120 --kill-pid 1234 --kill-at 8 --kill-signal KILL
  missive-load offline --addr 127.0.0.1:9443 --data-dir /tmp/bench-data --messages 10000
  missive-load fanout --addr 127.0.0.1:9443 --data-dir /tmp/bench-data --members 50 --rate 20
  missive-load media --addr 127.0.0.1:9443 --data-dir /tmp/bench-data --uploads 4 --files 8 --size 16777216 --downloads 4 --duration 10 --server-pid 1234
  missive-load media --addr 127.0.0.1:9443 --data-dir /tmp/bench-data --uploads 1 --size 1073741824 --downloads 2 --server-pid 1234
  missive-load abuse --server-bin target/release/missived --attack all --json > abuse.jsonl

The peer mode drives an MQTT broker (no tokens; --addr is the broker's, --server-pid its pid):
  missive-load mqtt chat --addr 127.0.0.1:1883 --users 1000 --size 128 --rate 10000 --duration 20 --server-pid 1234
  missive-load mqtt fanout --addr 127.0.0.1:1883 --members 500 --size 128 --rate 300 --duration 10
  missive-load mqtt offline --addr 127.0.0.1:1883 --messages 10000
  missive-load mqtt connect --addr 127.0.0.1:1883 -n 5000 --rate 1000 --duration 30 --server-pid 1234";

#[derive(Parser, Debug)]
#[command(name = "missive-load", version, about = "Load scenarios for a Missive server", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Ramp up many logged-in connections and hold them (heartbeats only).
    Connect(connect::Args),
    /// Users send one-to-one messages at an aggregate open-loop rate; optionally disrupts a
    /// server during the run (--kill-pid) and times its users' failover.
    #[command(after_help = chat::AFTER_HELP)]
    Chat(chat::Args),
    /// Queue messages for an offline user, then time its login and catch-up SYNC.
    Offline(offline::Args),
    /// One sender posts to a group; online members receive.
    Fanout(fanout::Args),
    /// Media over HTTP: concurrent resumable uploads (each digest checked), then ranged
    /// downloads of them (every byte checked); MB/s, time to first byte, the server's CPU and
    /// resident memory.
    Media(media::Args),
    /// The attacks of issue #18, each on a fresh server started from --server-bin, with an
    /// honest pair chatting alongside; one line (or JSON object) per attack.
    #[command(after_help = abuse::AFTER_HELP)]
    Abuse(abuse::Args),
    /// A before-send hook that allows every message (for `send_hook_url`), to measure what a
    /// hook costs; runs until killed or --for passes.
    Hook(hook::Args),
    /// The peer mode: the same workloads against an MQTT broker (mosquitto), for a
    /// side-by-side run.
    Mqtt(mqtt::Args),
}

impl Scenario {
    /// The settings every scenario against a running server has (`abuse` starts its own).
    fn common(&self) -> Option<&Common> {
        match self {
            Scenario::Connect(a) => Some(&a.common),
            Scenario::Chat(a) => Some(&a.common),
            Scenario::Offline(a) => Some(&a.common),
            Scenario::Fanout(a) => Some(&a.common),
            Scenario::Media(a) => Some(&a.common),
            Scenario::Abuse(_) | Scenario::Hook(_) | Scenario::Mqtt(_) => None,
        }
    }

    fn threads(&self) -> usize {
        match self {
            Scenario::Abuse(a) => a.threads(),
            Scenario::Hook(_) => 1,
            Scenario::Mqtt(a) => a.threads(),
            other => other.common().map_or(1, Common::threads),
        }
    }
}

/// mimalloc instead of glibc's malloc: every message allocates and frees on different worker
/// threads (the send, its reply, the delivery event), which glibc serves slowly (profiles of
/// `chat` at capacity: docs/history/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = common::raise_nofile_limit();
    let threads = cli.scenario.threads();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("missive-load: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let common = match (&cli.scenario, cli.scenario.common()) {
            (_, Some(common)) => common,
            (Scenario::Abuse(a), None) => {
                eprintln!("missive-load: open-file limit {nofile}");
                return abuse::run(a).await;
            }
            (Scenario::Hook(a), None) => return hook::run(a).await,
            (Scenario::Mqtt(a), None) => return mqtt::run(a).await,
            (_, None) => anyhow::bail!("no server settings for this scenario"),
        };
        let env = Env::new(common)?;
        eprintln!(
            "missive-load: users {}-*, server {}, open-file limit {nofile}",
            env.prefix,
            env.addrs.join(",")
        );
        let report = match &cli.scenario {
            Scenario::Connect(a) => connect::run(&env, a).await?,
            Scenario::Chat(a) => chat::run(&env, a).await?,
            Scenario::Offline(a) => offline::run(&env, a).await?,
            Scenario::Fanout(a) => fanout::run(&env, a).await?,
            Scenario::Media(a) => media::run(&env, a).await?,
            Scenario::Abuse(_) | Scenario::Hook(_) | Scenario::Mqtt(_) => {
                anyhow::bail!("not a scenario against a Missive server")
            }
        };
        report.print(env.json);
        anyhow::Ok(report.failures.is_empty())
    });
    // Connections still open are dropped with the runtime, without waiting for their tasks.
    runtime.shutdown_background();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.downcast_ref::<Unsupported>().is_some() => {
            eprintln!("missive-load: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("missive-load: {e:#}");
            ExitCode::from(1)
        }
    }
}
