#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets from protocol/vectors/*.json.

Standard library only. Files are named by the SHA-1 of their content (as libFuzzer names
them), so running this again adds nothing new. Run from anywhere:

    python3 fuzz/gen_corpus.py

Seeds follow each target's input layout (see fuzz/README.md):
- frame_decoder: [control, prng seed] + byte stream.
- body_roundtrip: [index into Command::ALL] + uncompressed body.
- token_verify: [0] + token text (raw mode).
- session: actions, one opcode byte and one byte per field each (`session_seeds` below).
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


# session actions (fuzz_targets/session.rs, fn decode): opcode, then one byte per field.
# `who` picks user who % 4 on device (who // 4) % 3; a group byte picks group g % (groups + 1)
# in creation order (the last: a group that does not exist); a conversation selector is
# (kind, index) with kind 0 = the message's own conversation, 1 = direct with user index % 5
# (4 is the ghost, who never logs in), 2 = group index.
OP = {name: i for i, name in enumerate(
    "login relogin bad_login send burst send_group burst_group sync drain push_ack mark_read "
    "recall delete group_create group_join group_leave group_members group_list group_history "
    "unread contacts heartbeat disconnect raw_bytes raw_frame group_set_role".split())}
# Later actions have opcode bytes from 234 (26 * 9) on, which no earlier seed used, so adding them
# left the meaning of the older inputs alone (bytes below 234 are taken % 26).
OP.update(block=234, block_list=235)
OF_MSG, DIRECT, GROUP = 0, 1, 2


def act(name, *fields):
    return bytes([OP[name], *fields])


def who(user, device=0):
    return user + 4 * device


def raw_bytes(data, login=False):
    data += b"\0" * (-len(data) % 4)  # the length byte counts 4-byte units
    return act("raw_bytes", 1 if login else 0, len(data) // 4) + data


def raw_frame(command, body=b"", flags=0, request_id=9):
    return act("raw_frame", flags, command >> 8, command & 0xFF, request_id, len(body)) + body


def session_seeds():
    """Hand-written sessions, each reaching one area; the fuzzer combines them."""
    a, b, c, d = (who(i) for i in range(4))
    ghost = 4
    seeds = []
    # Direct messages: send, pushes, sync, read, unread, contacts.
    seeds.append(act("login", a) + act("login", b) + act("send", a, 1, 0, 0) + act("drain", b)
                 + act("send", b, 0, 1, 0) + act("sync", b, 0, 0) + act("unread", a)
                 + act("mark_read", a, DIRECT, 1, 0xFF) + act("unread", a) + act("contacts", b, 0)
                 + act("heartbeat", a))
    # Pipelined sends with a SYNC and a HEARTBEAT behind them, resends (duplicates), to oneself,
    # too large, to the ghost.
    seeds.append(act("burst", a, 1, 0, 5, 1) + act("burst", a, 1, 2, 3, 2) + act("send", a, 1, 3, 0)
                 + act("send", a, 0, 0, 0) + act("send", a, 1, 9, 0xFF) + act("send", b, ghost, 1, 0)
                 + act("sync", a, 1, 2) + act("sync", b, 3, 0) + act("unread", b))
    # Recall and delete: by the sender, by the peer, twice, in the wrong conversation.
    seeds.append(act("send", a, 1, 0, 0) + act("send", b, 0, 1, 0) + act("recall", a, 0, OF_MSG, 0)
                 + act("recall", a, 0, OF_MSG, 0) + act("recall", a, 1, OF_MSG, 0)
                 + act("delete", b, 1, OF_MSG, 0) + act("delete", b, 1, OF_MSG, 0)
                 + act("delete", c, 0, OF_MSG, 0) + act("recall", b, 1, DIRECT, 2)
                 + act("mark_read", b, DIRECT, 0, 1) + act("unread", b) + act("sync", b, 0, 0))
    # A write fan-out group (2 members): send, read, history, leave and rejoin.
    seeds.append(act("group_create", a, 0b0010, 0) + act("send_group", a, 0, 0)
                 + act("send_group", b, 0, 1) + act("drain", b) + act("mark_read", b, GROUP, 0, 1)
                 + act("group_history", b, 0, 0, 0, 0) + act("group_leave", b, 0, 0)
                 + act("send_group", b, 0, 2) + act("group_join", b, 0, 0) + act("unread", b)
                 + act("group_members", a, 0) + act("group_list", b))
    # A read fan-out group (4 members, FROM_JOIN history): owner adds and removes, recalls.
    seeds.append(act("group_create", a, 0b0110, 1) + act("burst_group", b, 0, 0, 3)
                 + act("group_join", a, 0, 0b1000) + act("send_group", d, 0, 4)
                 + act("group_history", d, 0, 0, 0, 3) + act("group_history", d, 0, 0, 1, 2)
                 + act("recall", a, 0, OF_MSG, 0) + act("recall", c, 0, OF_MSG, 0)
                 + act("group_leave", a, 0, 3) + act("group_leave", c, 0, 1)
                 + act("group_members", b, 0) + act("unread", b) + act("delete", b, 1, GROUP, 0))
    # Group refusals: not a member, not the owner, full, bad history, no such group.
    seeds.append(act("group_create", a, 0b11111, 0) + act("group_create", a, 0, 2)
                 + act("group_create", a, 0b0001, 0) + act("send_group", b, 0, 0)
                 + act("group_join", b, 0, 0b0100) + act("group_leave", b, 0, 1)
                 + act("group_members", c, 0) + act("group_history", c, 0, 0, 0, 0)
                 + act("send_group", a, 1, 0) + act("group_join", a, 1, 0)
                 + act("group_join", a, 0, 0b11110))
    # Roles, an open group and paging: the owner makes b an admin, who adds d, recalls c's
    # message and removes c, but may not remove another admin nor set roles; OWNER and unknown
    # roles are refused; c joins the open group by itself; history bounds of 2^64 - 1 in both
    # orders; members, groups and unread counts one or two to a page; an unknown join policy.
    full_open = 2 * 3 + 0  # history byte: FULL, (h / 3) % 4 = 2: JOIN_POLICY_OPEN
    seeds.append(act("group_create", a, 0b0110, full_open) + act("group_set_role", a, 0, 1, 1)
                 + act("group_join", b, 0, 0b1000) + act("send_group", c, 0, 0)
                 + act("recall", b, 0, OF_MSG, 0) + act("group_leave", b, 0, 3)
                 + act("group_set_role", b, 0, 3, 1) + act("group_set_role", a, 0, 0, 1)
                 + act("group_set_role", a, 0, 1, 2) + act("group_set_role", a, 0, 3, 1)
                 + act("group_leave", b, 0, 4) + act("group_leave", c, 0, 0)
                 + act("group_join", c, 0, 0) + act("send_group", d, 0, 1)
                 + act("group_history", d, 0, 0, 0xFF, 2 * 6 + 3)
                 + act("group_history", d, 0, 0xFF, 0, 1 * 6) + act("group_history", d, 0, 0, 0, 18)
                 + act("group_members", a, 16) + act("group_list", who(0) + 12)
                 + act("send", b, 0, 5, 0) + act("unread", who(0) + 12)
                 + act("group_create", a, 0, 9))
    # Devices: a third device kicks the oldest, the same device twice kicks the first.
    seeds.append(act("login", who(0, 0)) + act("login", who(0, 1)) + act("login", who(0, 2))
                 + act("relogin", who(0, 2)) + act("send", b, 0, 0, 0) + act("drain", who(0, 1))
                 + act("push_ack", who(0, 2), 0, 1) + act("disconnect", who(0, 1))
                 + act("heartbeat", who(0, 0)) + act("sync", who(0, 0), 0, 0))
    # Bad logins.
    seeds.append(act("bad_login", a, 0) + act("bad_login", b, 1) + act("bad_login", c, 2)
                 + act("bad_login", d, 3) + act("bad_login", a, 4, 5) + b"x.y.z" + act("heartbeat", a))
    # Garbage bytes before and after login.
    hb = frame(0x0002, b"")
    seeds.append(raw_bytes(b"GET / HTTP/1.1\r\n\r\n") + raw_bytes(hb) + raw_bytes(hb, login=True)
                 + raw_bytes(b"\0\0\0\x0eMS\x01\0\0\x02\0\0\0\x01") + raw_bytes(b"\xff\xff\xff\xffMS")
                 + raw_bytes(frame(0x0003, b"\x0a\x01x", request_id=3), login=True)
                 + raw_bytes(frame(0x0002, b"", flags=0x80), login=True) + act("heartbeat", a))
    # Arbitrary frames after login: unknown command, bad body, garbage zlib, reserved flags,
    # LOGIN again, a server-only command, a SEND to nobody, a PUSH_ACK, a SYNC.
    seeds.append(raw_frame(0x0777) + raw_frame(0x0003, b"\xff\xff") + raw_frame(0x0005, b"xx", flags=1)
                 + raw_frame(0x0001, b"\x0a\x01t") + raw_frame(0x4001) + raw_frame(0x8003)
                 + raw_frame(0x0003, b"\x0a\x01m\x12\x05\x08\x01\x12\x01z\x18\x01")
                 + raw_frame(0x0004, b"\x08\xff\x01") + raw_frame(0x0005, b"\x08\x00")
                 + raw_frame(0x0010, b"\x0a\x01n") + raw_frame(0x0002, b"", flags=4)
                 + act("heartbeat", a))
    # Blocking: b blocks a; a's resend of a message stored before is still its duplicate ack,
    # a's new sends (one, then in a pipeline with a SYNC behind) and b's are BLOCKED, either way;
    # a still recalls the earlier message; blocking again is idempotent, blocking oneself
    # INVALID_ARGUMENT, unblocking what was never blocked answers false; groups are not
    # affected; after the unblock a refused client_msg_id is stored (no dedup record was kept).
    seeds.append(act("send", a, 1, 0, 0) + act("group_create", a, 0b0010, 0) + act("block", b, 0, 1)
                 + act("send", a, 1, 0, 0) + act("send", a, 1, 1, 0) + act("send", b, 0, 0, 0)
                 + act("burst", a, 1, 0, 2, 1) + act("send_group", a, 0, 0)
                 + act("send_group", b, 0, 1) + act("recall", a, 0, OF_MSG, 0)
                 + act("block", b, 0, 1) + act("block", b, 1, 1) + act("block", a, 1, 0)
                 + act("block_list", b, 0, 0) + act("block_list", a, 0, 0) + act("unread", b)
                 + act("block", b, 0, 0) + act("send", a, 1, 1, 0) + act("send", b, 0, 0, 0)
                 + act("drain", b) + act("unread", a) + act("sync", b, 0, 0))
    # Block limits and the list: a blocks b and c, the third (d, the ghost) is LIMIT_EXCEEDED but
    # blocking b again is not, an invalid id INVALID_ARGUMENT; the list one and two to a page,
    # from the first and after an id; blocked both ways, one unblock is not enough; the ghost.
    seeds.append(act("block", a, 1, 1) + act("block", a, 2, 1) + act("block", a, 3, 1)
                 + act("block", a, 4, 1) + act("block", a, 1, 1) + act("block", a, 5, 1)
                 + act("block_list", a, 0, 1) + act("block_list", a, 2, 1)
                 + act("block_list", a, 5, 2) + act("block", b, 0, 1) + act("block", a, 2, 0)
                 + act("block", a, 4, 1) + act("send", a, 4, 0, 0) + act("send", c, 0, 0, 0)
                 + act("block", a, 1, 0) + act("send", a, 1, 0, 0) + act("send", b, 0, 0, 0)
                 + act("block", b, 0, 0) + act("burst", b, 0, 1, 1, 2)
                 + act("block_list", who(0, 1), 0, 2) + act("block_list", b, 0, 0))
    # Everything once, interleaved.
    seeds.append(act("login", a) + act("group_create", b, 0b1101, 0) + act("burst", c, 0, 3, 4, 1)
                 + act("send_group", d, 0, 0) + act("raw_bytes", 0, 1) + b"\0\0\0\x01"
                 + act("recall", d, 0, OF_MSG, 0) + act("mark_read", a, GROUP, 0, 0xFF)
                 + act("delete", a, 1, OF_MSG, 0) + act("group_leave", d, 0, 0)
                 + act("sync", a, 0, 1) + act("drain", a) + act("unread", a) + act("group_list", a)
                 + raw_frame(0x0003) + act("disconnect", a) + act("unread", c))
    return seeds


def main():
    frames = json.loads((PROTOCOL / "vectors" / "frames.json").read_text())["frames"]
    invalid = json.loads((PROTOCOL / "vectors" / "invalid.json").read_text())["invalid"]
    tokens = json.loads((PROTOCOL / "vectors" / "tokens.json").read_text())["tokens"]
    table = command_table()
    assert len(table) >= 30, table
    index_by_name = {name: i for i, (name, _) in enumerate(table)}
    index_by_number = {number: i for i, (_, number) in enumerate(table)}

    seeds = {"frame_decoder": [], "body_roundtrip": [], "token_verify": [],
             "session": session_seeds()}
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
        # v1: user.device.expires.sig; v2: user.device.issued.expires.sig.
        user, device, *times, sig = token.split(".")
        expires = times[-1]
        head = ".".join([user, device, *times[:-1]])
        tv.append(b"\x00" + f"{head}.0{expires}.{sig}".encode())
        tv.append(b"\x00" + f"{user}=.{token[len(user) + 1:]}".encode())
        tv.append(b"\x00" + f"{token}.".encode())
        tv.append(b"\x00" + f"{head}.+{expires}.{sig}".encode())

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
    assert total_files < 250 and total_bytes < 1 << 20, "keep the corpus small"


if __name__ == "__main__":
    main()
