//! Captures: the proxy's [`Event`]s as JSON lines, which `missive decode --file` reads back.
//!
//! The first line is `{"missive_capture":1}`; then one object per event:
//! `{"t_ms":12.5,"conn":1,"event":"frame","dir":"down","fate":"dropped","hex":"0000..."}`, or
//! `"event"` `open` (`listener`, `peer`, `local`), `refused`, `raw` (`dir`, `len`), `blackholed`
//! (`why`), `closed` (`by`, `why`). `hex` is the frame's bytes as the proxy forwarded them
//! (a `corrupted` frame with its flipped bit).

use std::io::Write;

use serde_json::{json, Value};

use super::{Event, What};

pub const HEADER: &str = "{\"missive_capture\":1}";

/// An event as one JSON object.
pub fn event_json(e: &Event) -> Value {
    let mut v = json!({
        "t_ms": (e.t.as_secs_f64() * 1e6).round() / 1e3,
        "conn": e.conn,
    });
    let more = match &e.what {
        What::Open {
            listener,
            peer,
            local,
        } => json!({
            "event": "open", "listener": listener, "peer": peer.to_string(),
            "local": local.to_string(),
        }),
        What::Refused => json!({"event": "refused"}),
        What::Frame { dir, raw, fate } => json!({
            "event": "frame", "dir": dir.name(), "fate": fate.name(), "hex": hex::encode(raw),
        }),
        What::Raw { dir, len } => json!({"event": "raw", "dir": dir.name(), "len": len}),
        What::Blackholed { why } => json!({"event": "blackholed", "why": why}),
        What::Closed { by, why } => json!({"event": "closed", "by": by.name(), "why": why}),
    };
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), more) {
        obj.extend(more);
    }
    v
}

/// Writes events to a capture file as they come.
pub struct CaptureWriter {
    out: std::io::BufWriter<std::fs::File>,
}

impl CaptureWriter {
    pub fn create(path: &std::path::Path) -> anyhow::Result<CaptureWriter> {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{HEADER}")?;
        Ok(CaptureWriter { out })
    }

    pub fn write(&mut self, e: &Event) {
        let _ = writeln!(self.out, "{}", event_json(e));
        let _ = self.out.flush();
    }
}

/// Whether `bytes` is a capture rather than raw frames.
pub fn is_capture(bytes: &[u8]) -> bool {
    bytes.starts_with(b"{\"missive_capture\"")
}

/// One line of a capture, read back.
#[derive(Debug)]
pub struct Line {
    pub json: Value,
    /// The frame's bytes, for a frame event.
    pub frame: Option<Vec<u8>>,
}

/// Reads a capture's lines.
pub fn read(text: &str) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let json: Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("capture line {}: {e}", i + 1))?;
        let frame = match json["hex"].as_str() {
            Some(h) => Some(
                hex::decode(h)
                    .map_err(|e| anyhow::anyhow!("capture line {}: bad hex: {e}", i + 1))?,
            ),
            None => None,
        };
        lines.push(Line { json, frame });
    }
    Ok(lines)
}
