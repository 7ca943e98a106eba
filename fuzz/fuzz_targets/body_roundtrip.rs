//! Frame bodies: decode, encode, decode again.
//!
//! Input: byte 0 picks the command (`Command::ALL[byte % len]`), the rest is the body.
//!
//! Checked, for every body that decodes:
//! - decode -> encode -> decode gives an equal `Packet`, and encoding that again gives the same
//!   bytes (the encoding of a decoded body is a fixed point);
//! - `Frame::compressed_above` (threshold 0: compressed whenever zlib makes it smaller) and
//!   `Frame::new` both give frames whose `packet()` is the same `Packet`, also through the
//!   codec (`to_bytes` then `FrameCodec::decode`);
//! - a compressed frame is refused (BAD_BODY) when the body limit is one byte short;
//! - the JSON form used by the tools and the test vectors round-trips to the same `Packet`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use missive_protocol::{Command, Frame, FrameCodec, Packet, ProtocolError};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let command = Command::ALL[pick as usize % Command::ALL.len()];
    let Ok(first) = Packet::decode_body(command, body) else {
        return;
    };
    assert_eq!(first.command(), command);

    let encoded = first.encode_body();
    let second = Packet::decode_body(command, &encoded).expect("an encoded body decodes");
    assert_eq!(first, second, "decode-encode-decode changed the packet");
    assert_eq!(
        second.encode_body(),
        encoded,
        "encoding is not a fixed point"
    );

    for frame in [Frame::compressed_above(&first, 7, 0), Frame::new(&first, 7)] {
        assert_eq!(frame.command, command as u16);
        assert_eq!(frame.packet(encoded.len()).as_ref(), Ok(&first));

        let mut wire = BytesMut::from(&frame.to_bytes()[..]);
        let decoded = FrameCodec::new(frame.encoded_len())
            .decode(&mut wire)
            .expect("own frame decodes")
            .expect("own frame is whole");
        assert!(wire.is_empty());
        assert_eq!(decoded, frame);
        assert_eq!(decoded.packet(encoded.len()).as_ref(), Ok(&first));

        if frame.flags.compressed() {
            assert!(frame.body.len() < encoded.len());
            assert!(
                matches!(
                    frame.packet(encoded.len() - 1),
                    Err(ProtocolError::BadBody { .. })
                ),
                "a body one byte over the limit was accepted"
            );
        } else {
            assert_eq!(&frame.body[..], &encoded[..]);
        }
    }

    let json = first.body_to_json();
    let back = Packet::body_from_json(command, json.clone())
        .unwrap_or_else(|e| panic!("JSON body does not read back: {e}\n{json}"));
    assert_eq!(back, first, "JSON round trip changed the packet: {json}");
});
