#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets from protocol/vectors/*.json.

Standard library only. Files are named by the SHA-1 of their content (as libFuzzer names
them), so running this again adds nothing new. Run from anywhere:

    python3 fuzz/gen_corpus.py

Seeds follow each target's input layout (see fuzz/README.md):
- frame_decoder: [control, prng seed] + byte stream.
- body_roundtrip: [index into Command::ALL] + uncompressed body.
- token_verify: [0] + token text (raw mode).
"""

import hashlib
import json
import re
import struct
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
PROTOCOL = FUZZ.parent / "protocol"
CORPUS = FUZZ / "corpus"

# frame_decoder control byte (fuzz_targets/frame_decoder.rs).
LIMIT_64K, LIMIT_16K, LIMIT_4K, LIMIT_MIN = 0, 1, 2, 3
FIX_CRC = 4
HOLD = 8
FRAMED_READ = 16
MAX_READS = 8  # bits 5..8 pick one of 8 largest-read sizes


def control(limit, fix=False, hold=False, framed=False, read=7):
    return limit | (FIX_CRC if fix else 0) | (HOLD if hold else 0) | (
        FRAMED_READ if framed else 0) | (read << 5)


def command_table():
    """(wire name, number) in Command::ALL order, read from the commands! table in command.rs."""
    text = (PROTOCOL / "src" / "command.rs").read_text()
    table = text[text.index("commands! {"):]
    rows = re.findall(r'^\s*\w+\s*=\s*(0x[0-9A-Fa-f]+),\s*"([A-Z_]+)",', table, re.M)
    return [(name, int(number, 16)) for number, name in rows]


def frame(command, body, flags=0, request_id=1):
    head = struct.pack(">I", 10 + len(body) + 4) + b"MS" + bytes([1, flags])
    head += struct.pack(">HI", command, request_id)
    return head + body + struct.pack(">I", zlib.crc32(head + body))


def varint(v):
    out = bytearray()
    while True:
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append(v & 0x7F | 0x80)
        v >>= 7


def send_body(total_frame_len):
    """A SEND body (field 4, content) that makes a frame of exactly total_frame_len bytes."""
    room = total_frame_len - 18  # header 14 + CRC 4
    for n in range(room, 0, -1):
        body = b"\x22" + varint(n) + b"m" * n
        if len(body) == room:
            return body
    raise ValueError(total_frame_len)


def main():
    frames = json.loads((PROTOCOL / "vectors" / "frames.json").read_text())["frames"]
    invalid = json.loads((PROTOCOL / "vectors" / "invalid.json").read_text())["invalid"]
    tokens = json.loads((PROTOCOL / "vectors" / "tokens.json").read_text())["tokens"]
    table = command_table()
    assert len(table) >= 30, table
    index_by_name = {name: i for i, (name, _) in enumerate(table)}
    index_by_number = {number: i for i, (_, number) in enumerate(table)}

    seeds = {"frame_decoder": [], "body_roundtrip": [], "token_verify": []}
    fd = seeds["frame_decoder"]

    # Every vector once, cycling through readers, read sizes and frame holding.
    for i, v in enumerate(frames):
        ctrl = control(LIMIT_64K, fix=True, hold=i % 4 == 3, framed=i % 2 == 1, read=i % MAX_READS)
        fd.append(bytes([ctrl, i]) + bytes.fromhex(v["hex"]))
    for i, v in enumerate(invalid):
        ctrl = control(LIMIT_64K, framed=i % 2 == 0, read=(i + 3) % MAX_READS)
        fd.append(bytes([ctrl, i]) + bytes.fromhex(v["hex"]))

    # All valid frames back to back: many frames per read, frames split across reads.
    stream = b"".join(bytes.fromhex(v["hex"]) for v in frames)
    for ctrl in (control(LIMIT_64K, read=4), control(LIMIT_64K, framed=True, hold=True, read=2),
                 control(LIMIT_4K, fix=True, read=7), control(LIMIT_MIN, framed=True, read=0)):
        fd.append(bytes([ctrl, 7]) + stream)

    # At and past each limit: a frame of exactly the limit, and a length field one over.
    for limit_idx, limit in ((LIMIT_64K, 65536), (LIMIT_16K, 16384), (LIMIT_4K, 4096)):
        at_limit = frame(0x0003, send_body(4 + limit))
        assert len(at_limit) == 4 + limit
        for framed in (False, True):
            fd.append(bytes([control(limit_idx, framed=framed, read=5), 1]) + at_limit)
        fd.append(bytes([control(limit_idx, read=7), 2]) + struct.pack(">I", limit + 1) + b"MS\x01\x00")
    # The smallest limit: only empty bodies fit.
    empty = frame(0x0002, b"")
    fd.append(bytes([control(LIMIT_MIN, read=1), 3]) + empty + empty)
    fd.append(bytes([control(LIMIT_MIN, read=7), 3]) + frame(0x0002, b"\x08\x01"))

    br = seeds["body_roundtrip"]
    for v in frames:
        body = bytes.fromhex(v["hex"])[14:-4]
        if v["flags"] & 1:
            body = zlib.decompress(body)
        br.append(bytes([index_by_name[v["command"]]]) + body)
    for v in invalid:
        if v["expected_error"] != "BAD_BODY":
            continue
        raw = bytes.fromhex(v["hex"])
        command = struct.unpack(">H", raw[8:10])[0]
        body = raw[14:-4]
        if raw[7] & 1 or command not in index_by_number:
            continue  # bad zlib and zlib bombs are frame_decoder's
        br.append(bytes([index_by_number[command]]) + body)

    tv = seeds["token_verify"]
    for t in tokens:
        token = t["token"]
        tv.append(b"\x00" + token.encode())
        user, device, expires, sig = token.split(".")
        tv.append(b"\x00" + f"{user}.{device}.0{expires}.{sig}".encode())
        tv.append(b"\x00" + f"{user}=.{device}.{expires}.{sig}".encode())
        tv.append(b"\x00" + f"{user}.{device}.{expires}.{sig}.".encode())
        tv.append(b"\x00" + f"{user}.{device}.+{expires}.{sig}".encode())

    total_files = 0
    total_bytes = 0
    for target, items in seeds.items():
        out = CORPUS / target
        out.mkdir(parents=True, exist_ok=True)
        for data in items:
            path = out / hashlib.sha1(data).hexdigest()
            if not path.exists():
                path.write_bytes(data)
        files = list(out.iterdir())
        size = sum(p.stat().st_size for p in files)
        total_files += len(files)
        total_bytes += size
        print(f"{target}: {len(files)} files, {size} bytes")
    print(f"total: {total_files} files, {total_bytes} bytes")
    assert total_files < 200 and total_bytes < 1 << 20, "keep the corpus small"


if __name__ == "__main__":
    main()
