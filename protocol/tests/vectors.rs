//! Checks every file in `vectors/` against the real codec, in both directions.
//!
//! Regenerate the vectors with `cargo run -p missive-protocol --example gen_vectors`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::BytesMut;
use missive_protocol::frame::{parse_hex, Flags, Frame};
use missive_protocol::{token, Command, ErrorCode, FrameCodec, Packet, ProtocolError};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::codec::Decoder;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    max_frame_len: Option<usize>,
    #[serde(default)]
    frames: Vec<Valid>,
    #[serde(default)]
    invalid: Vec<Invalid>,
    #[serde(default)]
    tokens: Vec<TokenVector>,
    #[serde(default)]
    crc32: Vec<CrcVector>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Valid {
    name: String,
    command: String,
    request_id: u32,
    flags: u8,
    #[allow(dead_code)]
    note: String,
    body: Value,
    hex: String,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Invalid {
    name: String,
    expected_error: String,
    fatal: bool,
    /// The server refuses it; other protobuf runtimes may parse it (PROTOCOL.md 7).
    #[serde(default)]
    receiver_may_accept: bool,
    #[allow(dead_code)]
    note: String,
    hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenVector {
    name: String,
    secret: String,
    user_id: String,
    device_id: String,
    expires: u64,
    /// v2 tokens only.
    #[serde(default)]
    issued: Option<u64>,
    hmac_input: String,
    signature_hex: String,
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CrcVector {
    name: String,
    input_ascii: String,
    crc32: String,
}

struct Loaded {
    max_frame_len: usize,
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
    tokens: Vec<TokenVector>,
    crc32: Vec<CrcVector>,
}

/// `vectors/` of the checkout being tested: cargo sets `CARGO_MANIFEST_DIR` when it runs the
/// test too, which stays right when one target directory serves several checkouts (the path
/// compiled in is that of whichever checkout built the binary).
fn vector_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("vectors")
}

/// Every `*.json` file in `vectors/`, merged.
fn load() -> Loaded {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vector_dir())
        .expect("vectors/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no vector files");
    let mut all = Loaded {
        max_frame_len: missive_protocol::DEFAULT_MAX_FRAME_LEN,
        valid: vec![],
        invalid: vec![],
        tokens: vec![],
        crc32: vec![],
    };
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let file: VectorFile =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(max) = file.max_frame_len {
            assert_eq!(
                max,
                all.max_frame_len,
                "{}: one limit for all files",
                path.display()
            );
        }
        all.valid.extend(file.frames);
        all.invalid.extend(file.invalid);
        all.tokens.extend(file.tokens);
        all.crc32.extend(file.crc32);
    }
    let mut names = BTreeSet::new();
    for name in all
        .valid
        .iter()
        .map(|v| &v.name)
        .chain(all.invalid.iter().map(|v| &v.name))
    {
        assert!(names.insert(name.clone()), "duplicate vector name {name}");
    }
    all
}

fn bytes_of(name: &str, hex: &str) -> Vec<u8> {
    parse_hex(hex).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"))
}

/// Decodes exactly one frame from `wire`, which must hold nothing else.
fn decode_one(name: &str, codec: &mut FrameCodec, wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = codec
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"))
        .unwrap_or_else(|| panic!("{name}: decoder wants more bytes"));
    assert!(buf.is_empty(), "{name}: {} bytes left over", buf.len());
    frame
}

/// Feeds `wire` one byte at a time; returns the frames decoded or the first error.
fn decode_bytewise(codec: &mut FrameCodec, wire: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for b in wire {
        buf.extend_from_slice(&[*b]);
        while let Some(frame) = codec.decode(&mut buf)? {
            out.push(frame);
        }
    }
    if let Some(frame) = codec.decode_eof(&mut buf)? {
        out.push(frame);
    }
    Ok(out)
}

/// What a receiver reports for `wire`: the first error of decode, end of stream, or the body.
fn receive(codec: &mut FrameCodec, wire: &[u8]) -> Result<Packet, ProtocolError> {
    let mut buf = BytesMut::from(wire);
    let frame = match codec.decode(&mut buf)? {
        Some(frame) => frame,
        None => codec
            .decode_eof(&mut buf)?
            .expect("decode_eof yields a frame or an error"),
    };
    frame.packet(codec.max_frame_len())
}

#[test]
fn valid_vectors_decode_to_their_body() {
    let all = load();
    let mut codec = FrameCodec::new(all.max_frame_len);
    for v in &all.valid {
        let wire = bytes_of(&v.name, &v.hex);
        let command = Command::from_name(&v.command)
            .unwrap_or_else(|| panic!("{}: unknown command name {}", v.name, v.command));
        let frame = decode_one(&v.name, &mut codec, &wire);
        assert_eq!(frame.command, command as u16, "{}: command", v.name);
        assert_eq!(frame.request_id, v.request_id, "{}: request id", v.name);
        assert_eq!(frame.flags, Flags(v.flags), "{}: flags", v.name);
        let packet = frame
            .packet(all.max_frame_len)
            .unwrap_or_else(|e| panic!("{}: body: {e}", v.name));
        assert_eq!(packet.command(), command, "{}", v.name);
        assert_eq!(
            packet.body_to_json(),
            v.body,
            "{}: decoded body differs",
            v.name
        );
        let from_json = Packet::body_from_json(command, v.body.clone())
            .unwrap_or_else(|e| panic!("{}: body_from_json: {e}", v.name));
        assert_eq!(
            packet, from_json,
            "{}: JSON body differs from decoded body",
            v.name
        );
    }
}

#[test]
fn uncompressed_valid_vectors_encode_byte_for_byte() {
    let all = load();
    let mut checked = 0;
    for v in all
        .valid
        .iter()
        .filter(|v| v.flags & Flags::COMPRESSED == 0)
    {
        let command = Command::from_name(&v.command).unwrap();
        let packet = Packet::body_from_json(command, v.body.clone()).unwrap();
        let mut frame = Frame::new(&packet, v.request_id);
        frame.flags = Flags(v.flags);
        let wire = frame.to_bytes();
        assert_eq!(
            hex::encode(&wire),
            v.hex.to_ascii_lowercase(),
            "{}: encoding",
            v.name
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn compressed_valid_vectors_round_trip() {
    let all = load();
    let compressed: Vec<&Valid> = all
        .valid
        .iter()
        .filter(|v| v.flags & Flags::COMPRESSED != 0)
        .collect();
    assert!(
        !compressed.is_empty(),
        "need at least one COMPRESSED vector"
    );
    let mut codec = FrameCodec::new(all.max_frame_len);
    for v in compressed {
        let command = Command::from_name(&v.command).unwrap();
        let packet = Packet::body_from_json(command, v.body.clone()).unwrap();
        // zlib output may change between implementations: check the meaning, not the bytes.
        let frame = Frame::compressed_above(&packet, v.request_id, 1024);
        assert!(frame.flags.compressed(), "{}: still compresses", v.name);
        let frame = Frame {
            flags: Flags(v.flags),
            ..frame
        };
        let again = decode_one(&v.name, &mut codec, &frame.to_bytes());
        assert_eq!(again, frame, "{}: frame round trip", v.name);
        assert_eq!(
            again.packet(all.max_frame_len).unwrap(),
            packet,
            "{}",
            v.name
        );
        // The vector's compressed body is smaller than the plain one, as the server requires.
        let vec_frame = decode_one(&v.name, &mut codec, &bytes_of(&v.name, &v.hex));
        assert!(
            vec_frame.body.len() < packet.encode_body().len(),
            "{}",
            v.name
        );
    }
}

#[test]
fn valid_vectors_decode_the_same_one_byte_at_a_time() {
    let all = load();
    let mut codec = FrameCodec::new(all.max_frame_len);
    for v in &all.valid {
        let wire = bytes_of(&v.name, &v.hex);
        let whole = decode_one(&v.name, &mut codec, &wire);
        let bytewise = decode_bytewise(&mut codec, &wire)
            .unwrap_or_else(|e| panic!("{}: byte-wise decode failed: {e}", v.name));
        assert_eq!(bytewise, vec![whole], "{}", v.name);
    }
}

#[test]
fn all_valid_vectors_back_to_back_decode_in_order() {
    let all = load();
    let mut stream = Vec::new();
    for v in &all.valid {
        stream.extend(bytes_of(&v.name, &v.hex));
    }
    let mut codec = FrameCodec::new(all.max_frame_len);
    let mut buf = BytesMut::from(&stream[..]);
    for v in &all.valid {
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.request_id, v.request_id, "{}", v.name);
    }
    assert!(buf.is_empty());
}

#[test]
fn invalid_vectors_fail_with_their_error() {
    let all = load();
    for v in &all.invalid {
        let wire = bytes_of(&v.name, &v.hex);
        let expected = ErrorCode::ALL
            .iter()
            .find(|c| c.name() == v.expected_error)
            .unwrap_or_else(|| panic!("{}: unknown error code {}", v.name, v.expected_error));
        assert_eq!(expected.is_fatal(), v.fatal, "{}: fatal flag", v.name);
        let mut codec = FrameCodec::new(all.max_frame_len);
        match receive(&mut codec, &wire) {
            Ok(p) => panic!("{}: decoded as {:?}", v.name, p.command()),
            Err(e) => assert_eq!(e.code().name(), v.expected_error, "{}: got {e}", v.name),
        }
        // A receiver reading the stream in small pieces reports the same code.
        let mut codec = FrameCodec::new(all.max_frame_len);
        let got = match decode_bytewise(&mut codec, &wire) {
            Err(e) => e.code(),
            Ok(frames) => {
                assert_eq!(frames.len(), 1, "{}", v.name);
                frames[0].packet(all.max_frame_len).unwrap_err().code()
            }
        };
        assert_eq!(got.name(), v.expected_error, "{}: byte-wise", v.name);
    }
}

/// Only a body that a standard protobuf runtime parses is marked so: the known field with the
/// wrong wire type. Everything else every receiver must refuse.
#[test]
fn only_the_wrong_wire_type_vector_may_be_accepted() {
    let all = load();
    let lenient: Vec<&str> = all
        .invalid
        .iter()
        .filter(|v| v.receiver_may_accept)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(lenient, ["bad_body_wrong_wire_type"]);
}

#[test]
fn every_command_has_a_valid_vector() {
    let all = load();
    let covered: BTreeSet<&str> = all.valid.iter().map(|v| v.command.as_str()).collect();
    let missing: Vec<&str> = Command::ALL
        .iter()
        .map(|c| c.name())
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(missing.is_empty(), "commands without a vector: {missing:?}");
    assert!(
        all.valid.iter().any(|v| v.flags & Flags::COMPRESSED != 0),
        "need a COMPRESSED vector"
    );
    assert!(
        all.valid
            .iter()
            .any(|v| v.command == "PUSH" && v.flags & Flags::RETRANSMIT != 0),
        "need a RETRANSMIT PUSH vector"
    );
}

#[test]
fn every_decoder_error_kind_has_an_invalid_vector() {
    let all = load();
    let mut kinds = BTreeSet::new();
    for v in &all.invalid {
        let wire = bytes_of(&v.name, &v.hex);
        let mut codec = FrameCodec::new(all.max_frame_len);
        let kind = match receive(&mut codec, &wire).unwrap_err() {
            ProtocolError::BadMagic(_) => "bad magic",
            ProtocolError::UnsupportedVersion(_) => "wrong version",
            ProtocolError::TooLarge { .. } => "oversized length",
            ProtocolError::TooShort(_) => "length below minimum",
            ProtocolError::Truncated { .. } => "truncated",
            ProtocolError::BadCrc { .. } => "bad CRC",
            ProtocolError::ReservedFlags(_) => "reserved flags",
            ProtocolError::UnknownCommand(_) => "unknown command",
            ProtocolError::BadBody { .. } => "undecodable body",
            ProtocolError::Io(_) => "i/o",
        };
        kinds.insert(kind);
    }
    for want in [
        "bad magic",
        "wrong version",
        "oversized length",
        "length below minimum",
        "truncated",
        "bad CRC",
        "reserved flags",
        "unknown command",
        "undecodable body",
    ] {
        assert!(kinds.contains(want), "no invalid vector for: {want}");
    }
}

#[test]
fn error_frames_in_vectors_match_the_code_table() {
    let all = load();
    for v in all.valid.iter().filter(|v| v.command == "ERROR") {
        let Packet::Error(e) = Packet::body_from_json(Command::Error, v.body.clone()).unwrap()
        else {
            unreachable!()
        };
        let code = ErrorCode::from_u32(e.code)
            .unwrap_or_else(|| panic!("{}: code {} not in the table", v.name, e.code));
        assert_eq!(
            e.fatal,
            code.is_fatal(),
            "{}: fatal flag of {}",
            v.name,
            code.name()
        );
    }
}

#[test]
fn token_and_crc_vectors() {
    let all = load();
    assert!(!all.tokens.is_empty() && !all.crc32.is_empty());
    assert!(
        all.tokens.iter().any(|t| t.issued.is_some()),
        "a v2 token vector"
    );
    for t in &all.tokens {
        let (minted, input) = match t.issued {
            None => (
                token::mint(t.secret.as_bytes(), &t.user_id, &t.device_id, t.expires),
                format!(
                    "missive-token-v1\n{}\n{}\n{}",
                    t.user_id, t.device_id, t.expires
                ),
            ),
            Some(issued) => (
                token::mint_v2(
                    t.secret.as_bytes(),
                    &t.user_id,
                    &t.device_id,
                    issued,
                    t.expires,
                ),
                format!(
                    "missive-token-v2\n{}\n{}\n{}\n{}",
                    t.user_id, t.device_id, issued, t.expires
                ),
            ),
        };
        assert_eq!(minted, t.token, "{}", t.name);
        assert_eq!(t.hmac_input, input, "{}", t.name);
        // The signature is the HMAC of hmac_input, computed here without the token code.
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(t.secret.as_bytes()).unwrap();
        mac.update(t.hmac_input.as_bytes());
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            t.signature_hex,
            "{}",
            t.name
        );
        let sig = t.token.rsplit('.').next().unwrap();
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        assert_eq!(hex::encode(raw), t.signature_hex, "{}", t.name);
        let claims = token::verify(t.secret.as_bytes(), &t.token, t.expires - 1).unwrap();
        assert_eq!(
            (claims.user_id.as_str(), claims.device_id.as_str()),
            (&*t.user_id, &*t.device_id)
        );
        assert_eq!(claims.issued, t.issued, "{}", t.name);
        assert!(token::verify(t.secret.as_bytes(), &t.token, t.expires).is_err());
    }
    for c in &all.crc32 {
        let want = u32::from_str_radix(&c.crc32, 16).unwrap();
        assert_eq!(
            crc32fast::hash(c.input_ascii.as_bytes()),
            want,
            "{}",
            c.name
        );
    }
}

/// Every message in the vectors is one a server could send: its id is `(ms << 22) | counter`
/// of its own timestamp (PROTOCOL.md 9.2), and GROUP_NOTIFY's `unread` is 0 (9.6: not computed
/// in notifications). Issue #18 found vectors breaking both.
#[test]
fn vector_messages_follow_the_id_rule_and_notifies_carry_no_count() {
    fn messages<'a>(v: &'a Value, out: &mut Vec<&'a serde_json::Map<String, Value>>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("msg_id") && m.contains_key("from_user") {
                    out.push(m);
                }
                m.values().for_each(|x| messages(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| messages(x, out)),
            _ => {}
        }
    }
    let all = load();
    let mut checked = 0;
    for v in &all.valid {
        if v.command == "GROUP_NOTIFY" {
            assert_eq!(v.body["unread"], 0, "{}: GROUP_NOTIFY.unread", v.name);
        }
        let mut found = Vec::new();
        messages(&v.body, &mut found);
        for m in found {
            let (Some(id), Some(at)) = (m["msg_id"].as_u64(), m["timestamp_ms"].as_i64()) else {
                continue;
            };
            if id == 0 {
                continue; // a stub (a contact's or an entry's message id only)
            }
            assert_eq!(
                (id >> 22) as i64,
                at,
                "{}: msg_id {id} is not (timestamp_ms << 22) | counter",
                v.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} messages in the vectors");
}
