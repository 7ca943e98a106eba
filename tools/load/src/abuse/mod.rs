//! `abuse`: the attacks of issue #18, each against a fresh `missived` it starts itself, with an
//! honest pair chatting alongside, measuring what the issue names (writer stall, bytes held per
//! connection, reply sizes, CPU seconds, honest latency and logins). One line per attack, or
//! one JSON object per line with `--json`.
//!
//! Every attack runs the same way ([`Rig`]): start the server, set up what the attack needs (as
//! the attacker could: groups, messages), start the honest side ([`honest`]), let it run alone
//! for `--baseline` seconds, run the attack (bounded), let the honest side run alone again for
//! `--after` seconds, stop everything. Honest figures are reported per phase.
//!
//! Only requests and fields of today's protocol are used, so the same tool measures a fixed
//! server: a refusal of the attack is a figure (the reply's code), not a failure of the tool.

mod args;
mod attacks;
mod figures;
mod honest;
mod http;
mod login;
mod outcome;
mod prelogin;
mod raw;
mod replies;
mod rig;
mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::common::{Common, Env};
use figures::{latency_json, latency_text, mib, short_ms, Phase, Phases};
use honest::{Log, Probe};
use outcome::Outcome;
use rig::Rig;
use server::ServerProc;

pub use args::Args;

pub const AFTER_HELP: &str = "\
Attacks (issue #18; --attack NAME[,NAME...] or all, in this order):
  group-create-huge   GROUP_CREATE with --members (200,000) distinct 3-character ids in a plain
                      (uncompressed) 1,000,006-byte body; reply time and the writer stall
  unread-many-groups  a user in --groups (10,000) groups pipelines --unreads (150) UNREADs
  mark-read           MARK_READ pipelined (64 in flight) on --mark-read-connections (1) for
                      --duration, on a conversation of 1,000 messages; honest throughput (32
                      bulk users, 8 sends in flight each) before and during
  sync-pipeline       --pipeline-connections (3) that never read each send 195 SYNC{limit 5000}
                      in one 4 KiB write; the inbox holds 12 messages of 60 KiB random bytes;
                      RSS per connection, and when the server drops them (missive_connections)
  history-pipeline    the same with GROUP_HISTORY{limit 500} on a group of 12 such messages
  contacts-pipeline   the same with CONTACTS{limit 200} over 12 such contacts
  group-list-many     a victim added to --groups (10,000) groups (names of 128 random
                      characters) asks GROUP_LIST: reply size on the wire and inflated
  prelogin-buffer     --prelogin-connections (2,000) announce a 1 MiB LOGIN frame and send all
                      of it but the last byte, never log in; RSS per connection, after close
  prelogin-buffer-ws  the same over WebSocket (/ws), the frame in one binary message
  prelogin-header     the same, but only the 14-byte header and one body byte are sent
  login-garbage       --garbage-workers (32) loops of connect + LOGIN with a garbage token for
                      --duration; honest logins (5/s) that succeed
  zlib-bomb           --bomb-connections (2) pipeline (8 in flight) LOGINs whose 4.7 KiB zlib
                      body (missive-protocol's fast level) inflates past 1 MiB (BAD_BODY, not
                      fatal) for --duration, reconnecting when closed; server CPU seconds
  http-slow           --http-connections (100) half-sent request heads and as many with a
                      lying Content-Length on the Server API, watched for --http-hold (30 s)

Every server: 127.0.0.1, free ports, a temp data dir under --work-dir, a fixed secret,
--durability async, the HTTP API on with a key, every other setting at its default (MISSIVE_*
variables are not passed on). The honest side runs on a thread of its own: honest-a and
honest-b send each other a message every --pace-ms (20) ms, open loop, and ping every 200 ms;
honest-login logs in afresh every 200 ms. Latencies run from the moment each was due.
\"writer stall\" is the longest honest send->SEND_ACK that overlapped the attack.

Exit codes: 0 every attack was measured (whatever the server did); 1 an attack could not be
run or measured (see its line); the server binary missing is an error at once.

Example:
  missive-load abuse --server-bin target/release/missived --attack all --json > before.jsonl";

pub async fn run(args: &Args) -> Result<bool> {
    server::check_binary(&args.server_bin)?;
    let names = figures::parse_attacks(&args.attack).map_err(anyhow::Error::msg)?;
    eprintln!(
        "missive-load abuse: {} attack(s) against {} (--durability {}), one fresh server each",
        names.len(),
        args.server_bin.display(),
        server::DURABILITY
    );
    let mut all_ok = true;
    for name in names {
        eprintln!("== {name}");
        let began = Instant::now();
        let result = run_one(args, name).await;
        let (line, json, ok) = match result {
            Ok((line, json)) => (line, json, true),
            Err(e) => {
                let text = format!("{e:#}");
                (
                    format!("{name}: NOT MEASURED: {text}"),
                    json!({"attack": name, "label": args.label, "measured": false, "error": text}),
                    false,
                )
            }
        };
        all_ok &= ok;
        eprintln!("   ({:.0} s)", began.elapsed().as_secs_f64());
        if args.json {
            eprintln!("{line}");
            println!("{json}");
        } else {
            println!("{line}");
        }
    }
    Ok(all_ok)
}

async fn run_one(args: &Args, name: &'static str) -> Result<(String, Value)> {
    let server = ServerProc::start(&args.server_bin, &args.work_dir, name, args.keep)?;
    let env = Env::new(&Common {
        addr: server.addr.clone(),
        addrs: Vec::new(),
        secret: Some(server::SECRET.into()),
        data_dir: PathBuf::new(),
        prefix: Some("abuse".into()),
        json: false,
        threads: 0,
    })?;
    // Other work on the machine changes every figure: the load average goes into the JSON.
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut rig = Rig {
        args,
        rss_start: server::settled_rss_kib(&server, Duration::from_secs(6)).await,
        server,
        env,
        honest: None,
        baseline_at: None,
        attack_at: None,
        after_at: None,
        rss_before: None,
        cpu_before: None,
        cpu_after: None,
        sampler: None,
        samples: Vec::new(),
        loadavg,
    };
    let outcome = match name {
        "group-create-huge" => attacks::group_create_huge(&mut rig).await,
        "unread-many-groups" => attacks::unread_many_groups(&mut rig).await,
        "mark-read" => attacks::mark_read(&mut rig).await,
        "sync-pipeline" | "history-pipeline" | "contacts-pipeline" => {
            replies::pipeline(&mut rig, name).await
        }
        "group-list-many" => replies::group_list_many(&mut rig).await,
        "prelogin-buffer" | "prelogin-buffer-ws" | "prelogin-header" => {
            prelogin::buffer(&mut rig, name).await
        }
        "login-garbage" => login::login_garbage(&mut rig).await,
        "zlib-bomb" => login::zlib_bomb(&mut rig).await,
        "http-slow" => http::http_slow(&mut rig).await,
        other => anyhow::bail!("no such attack {other}"),
    };
    rig.attack_ends();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(h) = rig.honest.take() {
                let _ = h.finish().await;
            }
            return Err(e).context(format!("server log:\n{}", rig.server.log_tail()));
        }
    };
    tokio::time::sleep(Args::secs(args.after)).await;
    let end = Instant::now();
    let log = match rig.honest.take() {
        Some(h) => h.finish().await?,
        None => Log::default(),
    };
    let rss_after = server::settled_rss_kib(&rig.server, Duration::from_secs(6)).await;
    let alive = rig.server.exited().is_none();
    let warnings = rig.server.log_warnings();
    let stopped = rig.server.stop();
    let phases = Phases {
        baseline: rig.baseline_at.unwrap_or(end),
        attack: rig.attack_at.unwrap_or(end),
        after: rig.after_at.unwrap_or(end),
    };
    Ok(summarize(
        name, &rig, &phases, &log, outcome, rss_after, alive, warnings, stopped,
    ))
}

/// Honest figures of one phase, as JSON and as the text of the line.
fn phase_figures(log: &Log, phases: &Phases, want: Phase) -> (Value, String) {
    let in_phase = |due: Instant, took: Option<Duration>| phases.classify(due, took) == want;
    let mut acks = Vec::new();
    let mut deliveries = Vec::new();
    let (mut sent, mut failed, mut unanswered) = (0u64, 0u64, 0u64);
    let mut failures = std::collections::BTreeMap::<String, u64>::new();
    for s in &log.sent {
        let took = match &s.ack {
            Some(Ok(d)) => Some(*d),
            _ => None,
        };
        if !in_phase(s.due, took) {
            continue;
        }
        sent += 1;
        match &s.ack {
            Some(Ok(d)) => acks.push(*d),
            Some(Err(e)) => {
                failed += 1;
                *failures.entry(e.clone()).or_insert(0) += 1;
            }
            None => unanswered += 1,
        }
        if let Some(d) = s.delivered {
            deliveries.push(d);
        }
    }
    let probes = |v: &[Probe]| -> (Vec<Duration>, u64, std::collections::BTreeMap<String, u64>) {
        let mut ok = Vec::new();
        let mut errors = std::collections::BTreeMap::new();
        for p in v {
            let took = p.result.as_ref().ok().copied();
            if !in_phase(p.due, took) {
                continue;
            }
            match &p.result {
                Ok(d) => ok.push(*d),
                Err(e) => *errors.entry(e.clone()).or_insert(0) += 1,
            }
        }
        let n = errors.values().sum();
        (ok, n, errors)
    };
    let (pings, ping_fail, _) = probes(&log.pings);
    let (logins, login_fail, login_errors) = probes(&log.logins);
    let (http, http_fail, http_errors) = probes(&log.http);
    let mut j = json!({
        "sent": sent,
        "acked": acks.len(),
        "failed": failed,
        "failures": failures,
        "unanswered": unanswered,
        "send_to_ack": latency_json(&acks),
        "send_to_delivery": latency_json(&deliveries),
        "heartbeat_rtt": latency_json(&pings),
        "heartbeat_failed": ping_fail,
        "logins_ok": logins.len(),
        "logins_failed": login_fail,
        "login_errors": login_errors,
        "login_time": latency_json(&logins),
    });
    if !log.http.is_empty() {
        j["http_healthz"] = latency_json(&http);
        j["http_failed"] = http_fail.into();
        j["http_errors"] = json!(http_errors);
    }
    let mut text = format!(
        "ack {}, delivery {}, heartbeat {}, logins ok {}/{}",
        latency_text(&acks),
        latency_text(&deliveries),
        latency_text(&pings),
        logins.len(),
        logins.len() as u64 + login_fail,
    );
    if !login_errors.is_empty() {
        let list: Vec<String> = login_errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        text.push_str(&format!(" ({})", list.join(", ")));
    }
    if failed + unanswered > 0 {
        text.push_str(&format!(", sends failed {failed} unanswered {unanswered}"));
    }
    if !log.http.is_empty() {
        text.push_str(&format!(
            ", /healthz {} ok {}/{}",
            latency_text(&http),
            http.len(),
            http.len() as u64 + http_fail
        ));
    }
    (j, text)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    name: &str,
    rig: &Rig<'_>,
    phases: &Phases,
    log: &Log,
    outcome: Outcome,
    rss_after: Option<u64>,
    alive: bool,
    warnings: usize,
    stopped: String,
) -> (String, Value) {
    let (base_j, base_t) = phase_figures(log, phases, Phase::Baseline);
    let (att_j, att_t) = phase_figures(log, phases, Phase::Attack);
    let (after_j, _) = phase_figures(log, phases, Phase::After);
    // The writer stall: the longest honest send->ack that overlapped the attack.
    let stall = att_j["send_to_ack"]["max_ms"].as_f64();
    let mut honest = json!({
        "baseline": base_j,
        "attack": att_j,
        "after": after_j,
        "lost": log.lost(),
        "duplicated": log.duplicated(),
        "pair_disconnects": log.disconnects,
        "writer_stall_ms": stall,
    });
    let mut bulk_text = String::new();
    if !log.bulk_acks.is_empty() || log.bulk_errors > 0 {
        let count = |a: Instant, b: Instant| {
            log.bulk_acks.iter().filter(|t| **t >= a && **t < b).count() as u64
        };
        let base = figures::rate(
            count(phases.baseline, phases.attack),
            phases.baseline_secs(),
        );
        let during = figures::rate(count(phases.attack, phases.after), phases.attack_secs());
        honest["bulk_msgs_per_s_baseline"] = base.into();
        honest["bulk_msgs_per_s_attack"] = during.into();
        honest["bulk_errors"] = log.bulk_errors.into();
        honest["bulk_first_error"] = json!(log.bulk_first_error);
        let ratio = if base > 0.0 { during / base } else { 0.0 };
        honest["bulk_ratio"] = ((ratio * 1000.0).round() / 1000.0).into();
        bulk_text = format!(
            "; honest throughput {base:.0} msg/s before, {during:.0} during ({:.0}%)",
            ratio * 100.0
        );
    }
    let kib = |v: Option<u64>| v.map(mib);
    let server = json!({
        "rss_start_mib": kib(rig.rss_start),
        "rss_before_attack_mib": kib(rig.rss_before),
        "rss_peak_attack_mib": kib(rig.peak_kib()),
        "rss_after_mib": kib(rss_after),
        "vm_hwm_mib": kib(rig.server.hwm_kib()),
        "cpu_secs_attack": rig.attack_cpu().map(|c| (c * 100.0).round() / 100.0),
        "attack_secs": (phases.attack_secs() * 100.0).round() / 100.0,
        "alive_at_end": alive,
        "log_warnings": warnings,
        "stop": stopped,
    });
    let line = format!(
        "{name}: {}{}; writer stall {}; honest during attack: {att_t}; baseline: {base_t}; \
         lost {} duplicated {}; server RSS {}→{}→{} MiB (before/peak/after), CPU {} s in {:.1} s{}{}",
        outcome.headline,
        bulk_text,
        stall.map_or("-".into(), |m| short_ms(Duration::from_secs_f64(m / 1000.0)) + " ms"),
        log.lost(),
        log.duplicated(),
        opt(kib(rig.rss_before)),
        opt(kib(rig.peak_kib())),
        opt(kib(rss_after)),
        rig.attack_cpu().map_or("-".into(), |c| format!("{c:.2}")),
        phases.attack_secs(),
        if alive { "" } else { "; THE SERVER DIED" },
        if outcome.problems.is_empty() {
            String::new()
        } else {
            format!("; INCOMPLETE: {}", outcome.problems.join("; "))
        },
    );
    let json = json!({
        "attack": name,
        "label": rig.args.label,
        "measured": true,
        "line": line,
        "durability": server::DURABILITY,
        "server_bin": rig.args.server_bin.display().to_string(),
        "loadavg_at_start": rig.loadavg,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "figures": outcome.figures,
        "problems": outcome.problems,
        "honest": honest,
        "server": server,
    });
    (line, json)
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}
