//! The `missive proxy` command, and the one-line form of an event that it prints and that
//! `missive decode` prints for a capture.

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use super::capture::{self, CaptureWriter};
use super::rules::{parse_rule, parse_scenario, Faults};
use super::{Event, Proxy, What};
use crate::args::{Global, ProxyArgs};
use crate::decoded::decode_stream;

/// The faults of `--fault` flags and a `--scenario` file.
pub fn faults_from(faults: &[String], scenario: Option<&std::path::Path>) -> Result<Faults> {
    let mut f = Faults::default();
    if let Some(path) = scenario {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for rule in parse_scenario(&text).with_context(|| format!("in {}", path.display()))? {
            f.add(rule);
        }
    }
    for text in faults {
        f.add(parse_rule(text).with_context(|| format!("--fault '{text}'"))?);
    }
    Ok(f)
}

/// A frame's command name and body, decoded from its bytes.
pub fn frame_summary(raw: &[u8]) -> (String, u32, Value, bool) {
    let (frames, _) = decode_stream(raw);
    match frames.first() {
        Some(f) => {
            let body = match (&f.body, &f.body_error) {
                (_, Some(e)) => Value::String(format!("undecodable body: {e}")),
                (Some(b), None) => b.clone(),
                (None, None) => Value::Null,
            };
            let mut name = f.command_name.clone();
            if f.flags & 0x02 != 0 {
                name.push_str(" (RETRANSMIT)");
            }
            (name, f.request_id, body, f.crc_ok)
        }
        None => ("(not a frame)".into(), 0, Value::Null, false),
    }
}

/// `+   1.234 c1 -> SEND #3 forwarded {...}`
pub fn event_line(e: &Event) -> String {
    let head = format!("+{:>9.3} c{}", e.t.as_secs_f64(), e.conn);
    match &e.what {
        What::Open { listener, peer, .. } => {
            format!("{head} open from {peer} (listener {listener})")
        }
        What::Refused => format!("{head} refused (closed at once)"),
        What::Frame { dir, raw, fate } => {
            let (name, rid, body, crc_ok) = frame_summary(raw);
            let crc = if crc_ok { "" } else { " BAD CRC" };
            format!(
                "{head} {} {name} #{rid} {}{crc} {body}",
                dir.arrow(),
                fate.name()
            )
        }
        What::Raw { dir, len } => format!("{head} {} {len} bytes (not frames)", dir.arrow()),
        What::Blackholed { why } => format!("{head} black hole: {why}"),
        What::Closed { by, why } => format!("{head} closed by the {}: {why}", by.name()),
    }
}

/// An event as JSON, with a frame's decoded command and body.
pub fn event_json(e: &Event) -> Value {
    let mut v = capture::event_json(e);
    if let What::Frame { raw, .. } = &e.what {
        let (name, rid, body, crc_ok) = frame_summary(raw);
        v["command_name"] = name.into();
        v["request_id"] = rid.into();
        v["body"] = body;
        v["crc"] = if crc_ok { "ok" } else { "bad" }.into();
    }
    v
}

/// `missive proxy`.
pub async fn proxy(g: &Global, a: ProxyArgs) -> Result<ExitCode> {
    let faults = faults_from(&a.faults, a.scenario.as_deref())?;
    let mut capture = match &a.capture {
        Some(p) => Some(CaptureWriter::create(p)?),
        None => None,
    };
    let upstream = g.addr.strip_prefix("tcp://").unwrap_or(&g.addr).to_string();
    let (proxy, mut events) = Proxy::start(&a.listen, &upstream, faults).await?;
    for addr in proxy.local_addrs() {
        eprintln!("missive proxy: listening on {addr}, forwarding to {upstream}");
    }
    let until = a
        .for_secs
        .map(|s| tokio::time::Instant::now() + std::time::Duration::from_secs(s));
    loop {
        let e = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => break },
            _ = async { match until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        if let Some(c) = capture.as_mut() {
            c.write(&e);
        }
        if a.quiet {
            continue;
        }
        if g.json {
            println!("{}", event_json(&e));
        } else {
            println!("{}", event_line(&e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `missive decode --file CAPTURE`: every event, frames decoded. Fails if a frame is corrupt.
pub fn decode_capture(text: &str, json: bool) -> Result<ExitCode> {
    let mut bad = false;
    for line in capture::read(text)? {
        let j = &line.json;
        if json {
            let mut v = j.clone();
            if let Some(raw) = &line.frame {
                let (name, rid, body, crc_ok) = frame_summary(raw);
                v["command_name"] = name.into();
                v["request_id"] = rid.into();
                v["body"] = body;
                v["crc"] = if crc_ok { "ok" } else { "bad" }.into();
            }
            println!("{v}");
            continue;
        }
        let head = format!(
            "+{:>9.3} c{}",
            j["t_ms"].as_f64().unwrap_or(0.0) / 1e3,
            j["conn"].as_u64().unwrap_or(0)
        );
        let event = j["event"].as_str().unwrap_or("?");
        match &line.frame {
            Some(raw) => {
                let (name, rid, body, crc_ok) = frame_summary(raw);
                bad |= !crc_ok;
                let arrow = if j["dir"] == "up" { "->" } else { "<-" };
                let crc = if crc_ok { "" } else { " BAD CRC" };
                println!(
                    "{head} {arrow} {name} #{rid} {}{crc} {body}",
                    j["fate"].as_str().unwrap_or("?")
                );
            }
            None => {
                let mut rest = j.clone();
                if let Some(o) = rest.as_object_mut() {
                    o.remove("t_ms");
                    o.remove("conn");
                    o.remove("event");
                }
                println!("{head} {event} {rest}");
            }
        }
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
