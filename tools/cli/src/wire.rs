//! Frames as bytes: `decode`, `encode` and `raw`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use missive_client::Connection;
use missive_protocol::frame::parse_hex;
use missive_protocol::{Command, Flags, Frame, Packet};
use serde_json::{json, Value};

use crate::args::Global;
use crate::decoded::{decode_stream, parse_command, FrameInfo, StreamEnd};
use crate::output;

/// Whether anything in the stream is wrong.
fn has_errors(frames: &[FrameInfo], end: &StreamEnd) -> bool {
    *end != StreamEnd::Clean || frames.iter().any(|f| !f.crc_ok || f.body_error.is_some())
}

fn print_stream(frames: &[FrameInfo], end: &StreamEnd, json: bool, extra: Value) {
    if json {
        let mut v = json!({
            "frames": frames.iter().map(output::frame_json).collect::<Vec<_>>(),
            "error": output::end_text(end),
        });
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        println!("{v}");
        return;
    }
    for (i, f) in frames.iter().enumerate() {
        println!("{}", output::frame_text(i + 1, f));
    }
    if let Some(e) = output::end_text(end) {
        println!("{e}");
    }
}

fn hex_args(args: &[String]) -> Result<Vec<u8>> {
    parse_hex(&args.join("")).map_err(|e| anyhow!("bad hex: {e}"))
}

/// `missive decode`.
pub fn decode(g: &Global, hex: &[String], file: Option<&Path>) -> Result<ExitCode> {
    let bytes = match file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None if hex.is_empty() => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            parse_hex(&text).map_err(|e| anyhow!("bad hex on stdin: {e}"))?
        }
        None => hex_args(hex)?,
    };
    if bytes.is_empty() {
        bail!("nothing to decode");
    }
    if crate::proxy::capture::is_capture(&bytes) {
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("the capture is not UTF-8"))?;
        return crate::proxy::run::decode_capture(&text, g.json);
    }
    let (frames, end) = decode_stream(&bytes);
    print_stream(&frames, &end, g.json, json!({}));
    Ok(if has_errors(&frames, &end) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Builds the frame `encode` prints.
pub fn build_frame(command: &str, request_id: u32, body: &str, flags: u8) -> Result<Frame> {
    let number = parse_command(command)?;
    let value: Value = serde_json::from_str(body).context("--body is not JSON")?;
    let mut body = match Command::from_u16(number) {
        Ok(cmd) => Packet::body_from_json(cmd, value)
            .map_err(|e| anyhow!("--body does not fit {}: {e}", cmd.name()))?
            .encode_body(),
        Err(_) if value == json!({}) => Vec::new(),
        Err(_) => bail!("command {number:#06x} is not in the table: only an empty body ({{}})"),
    };
    if flags & Flags::COMPRESSED != 0 {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&body)?;
        body = enc.finish()?;
    }
    Ok(Frame {
        flags: Flags(flags),
        command: number,
        request_id,
        body: Bytes::from(body),
    })
}

/// `missive encode`.
pub fn encode(g: &Global, command: &str, id: u32, body: &str, flags: u8) -> Result<ExitCode> {
    let wire = hex::encode(build_frame(command, id, body, flags)?.to_bytes());
    if g.json {
        println!("{}", json!({ "hex": wire }));
    } else {
        println!("{wire}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `missive raw`: send bytes, collect the answer until the server closes or `wait` passes.
pub async fn raw(g: &Global, hex: &[String], wait: f64) -> Result<ExitCode> {
    let bytes = hex_args(hex)?;
    let timeout = Duration::from_secs(g.timeout.max(1));
    let mut conn = Connection::connect_timeout(&g.endpoint(), timeout)
        .await
        .with_context(|| format!("cannot connect to {}", g.endpoint()))?;
    conn.write_raw(&bytes).await?;
    let wait = Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or(Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + wait;
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(deadline, conn.read_raw(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                // A reset after the server's last frame is a close too.
                eprintln!("read failed: {e}");
                closed = true;
                break;
            }
        }
    }
    let (frames, end) = decode_stream(&received);
    let status = if closed {
        "the server closed the connection"
    } else {
        "still open when the wait ended"
    };
    if !g.json {
        println!(
            "sent {} bytes, received {} bytes; {status}",
            bytes.len(),
            received.len()
        );
    }
    let extra = json!({
        "sent": bytes.len(), "received_hex": hex::encode(&received), "closed": closed,
    });
    print_stream(&frames, &end, g.json, extra);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> Vec<u8> {
        build_frame("HEARTBEAT", 1, r#"{"client_time_ms": 5}"#, 0)
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn bad_crc_is_reported_and_the_next_frame_still_read() {
        let mut bytes = heartbeat();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.extend(heartbeat());
        let (frames, end) = decode_stream(&bytes);
        assert_eq!(end, StreamEnd::Clean);
        assert_eq!(frames.len(), 2);
        assert!(!frames[0].crc_ok);
        assert!(frames[1].crc_ok);
        assert_eq!(frames[1].offset, 20);
        assert!(has_errors(&frames, &end));
    }

    #[test]
    fn framing_errors_are_named_by_code() {
        let mut bytes = heartbeat();
        bytes.extend_from_slice(&heartbeat()[..9]);
        let (frames, end) = decode_stream(&bytes);
        assert_eq!(frames.len(), 1);
        match end {
            StreamEnd::Error { offset, message } => {
                assert_eq!(offset, 20);
                assert!(message.starts_with("BAD_FRAME (1): connection closed inside a frame"));
            }
            other => panic!("{other:?}"),
        }
        let (_, end) = decode_stream(&hex::decode("0000000e5858").unwrap());
        assert!(
            matches!(end, StreamEnd::Error { message, .. } if message.starts_with("BAD_FRAME (1): bad magic"))
        );
    }

    #[test]
    fn unknown_commands_and_compressed_bodies() {
        assert_eq!(parse_command("send").unwrap(), 3);
        assert_eq!(parse_command("0x4001").unwrap(), 0x4001);
        assert_eq!(parse_command("65535").unwrap(), 0xffff);
        let unknown = build_frame("0x0777", 2, "{}", 0).unwrap().to_bytes();
        let (frames, _) = decode_stream(&unknown);
        assert_eq!(frames[0].command_name, "UNKNOWN");
        assert!(frames[0]
            .body_error
            .as_deref()
            .unwrap()
            .starts_with("UNKNOWN_COMMAND (5)"));
        let body = r#"{"since_version": 7, "limit": 3}"#;
        let packed = build_frame("SYNC", 4, body, Flags::COMPRESSED).unwrap();
        let (frames, end) = decode_stream(&packed.to_bytes());
        assert_eq!(end, StreamEnd::Clean);
        assert_eq!(
            frames[0].body,
            Some(json!({"since_version": 7, "limit": 3}))
        );
        assert!(build_frame("SYNC", 1, r#"{"nope": 1}"#, 0).is_err());
    }
}
