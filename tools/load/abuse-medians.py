#!/usr/bin/env python3
"""Medians of `missive-load abuse --json` runs, as the Markdown tables of ABUSE-BEFORE.md.

    tools/load/abuse-medians.py r1.jsonl r2.jsonl r3.jsonl

Each file holds one JSON object per attack (one run). For every figure the median over the runs
is printed, with the runs' values in brackets when they differ. Python 3, standard library only.
"""
import json
import statistics
import sys

# Per attack: (label, path into the JSON object, unit). Paths are dotted; a figure missing
# from a run (a fixed server that refuses earlier, say) shows as "-".
KEY = {
    "group-create-huge": [
        ("reply", "figures.reply", ""),
        ("reply after", "figures.reply_secs", "s"),
    ],
    "unread-many-groups": [
        ("groups the user got into", "figures.groups", ""),
        ("150 UNREADs answered in", "figures.burst_secs", "s"),
        ("one UNREAD alone", "figures.one_unread_ms", "ms"),
    ],
    "mark-read": [
        ("MARK_READs answered", "figures.mark_reads_per_s", "/s"),
        ("honest bulk before", "honest.bulk_msgs_per_s_baseline", "msg/s"),
        ("honest bulk during", "honest.bulk_msgs_per_s_attack", "msg/s"),
        ("during/before", "honest.bulk_ratio", ""),
    ],
    "sync-pipeline": "pipeline",
    "history-pipeline": "pipeline",
    "contacts-pipeline": "pipeline",
    "group-list-many": [
        ("groups the victim got into", "figures.groups", ""),
        ("reply on the wire", "figures.reply_wire_bytes", "B"),
        ("reply inflated", "figures.reply_inflated_bytes", "B"),
        ("groups listed", "figures.groups_listed", ""),
    ],
    "prelogin-buffer": "prelogin",
    "prelogin-buffer-ws": "prelogin",
    "prelogin-header": "prelogin",
    "login-garbage": [
        ("garbage LOGINs answered", "figures.garbage_answered_per_s", "/s"),
        ("honest logins ok", "honest.attack.logins_ok", ""),
        ("honest logins refused", "honest.attack.logins_failed", ""),
    ],
    "zlib-bomb": [
        ("bombs answered BAD_BODY", "figures.replies.BAD_BODY", ""),
        ("sent", "figures.bytes_sent", "B"),
        ("inflated (at least)", "figures.inflated_bytes_at_least", "B"),
        ("server CPU share", "figures.server_cpu_share", "cores"),
    ],
    "http-slow": [
        ("half-sent heads held at end", "figures.half_sent_head_held_at_end", ""),
        ("lying Content-Length held at end", "figures.lying_content_length_held_at_end", ""),
        ("watched", "figures.hold_secs", "s"),
    ],
}
SHAPES = {
    "pipeline": [
        ("requests per connection", "figures.requests_per_connection", ""),
        ("one reply on the wire", "figures.one_reply_wire_bytes", "B"),
        ("bytes held per connection", "figures.bytes_held_per_connection", "B"),
        ("all dropped by the server after", "figures.all_dropped_after_secs", "s"),
        ("RSS after close", "figures.rss_after_close_mib", "MiB"),
    ],
    "prelogin": [
        ("connections open at once", "figures.most_open_at_once", ""),
        ("bytes held per connection", "figures.bytes_held_per_connection", "B"),
        ("kept per connection after close", "figures.bytes_kept_per_connection_after_close", "B"),
    ],
}
COMMON = [
    ("writer stall", "honest.writer_stall_ms", "ms"),
    ("honest ack p50", "honest.attack.send_to_ack.p50_ms", "ms"),
    ("honest ack p99", "honest.attack.send_to_ack.p99_ms", "ms"),
    ("honest delivery p99", "honest.attack.send_to_delivery.p99_ms", "ms"),
    ("heartbeat p99", "honest.attack.heartbeat_rtt.p99_ms", "ms"),
    ("heartbeat max", "honest.attack.heartbeat_rtt.max_ms", "ms"),
    ("honest lost", "honest.lost", ""),
    ("RSS before", "server.rss_before_attack_mib", "MiB"),
    ("RSS peak", "server.rss_peak_attack_mib", "MiB"),
    ("RSS after", "server.rss_after_mib", "MiB"),
    ("server CPU", "server.cpu_secs_attack", "s"),
    ("attack lasted", "server.attack_secs", "s"),
]


def get(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def fmt(v):
    if isinstance(v, float) and v.is_integer() and abs(v) >= 10:
        return f"{int(v):,}"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def size(b):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(b) >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b:.0f} B"


def with_unit(text_of, values, unit):
    """Bytes as KiB/MiB/GiB; anything else as the number and its unit."""
    if unit == "B" and numbers(values) is not None:
        return text_of(values, size)
    return text_of(values, fmt) + (" " + unit if unit else "")


def numbers(values):
    """The numbers among `values` if every value present is one (runs without the figure, such
    as a phase too short for a heartbeat, are left out), else None."""
    present = [v for v in values if v is not None]
    nums = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return nums if present and len(nums) == len(present) else None


def cell(values, fmt=fmt):
    nums = numbers(values)
    if nums is not None:
        text = fmt(statistics.median(nums))
        if len(set(nums)) > 1:
            text += " (" + " / ".join("-" if v is None else fmt(v) for v in values) + ")"
        elif len(nums) < len(values):
            text += f" ({len(nums)} of {len(values)} runs)"
        return text
    shown = sorted({fmt(v) for v in values if v is not None})
    return " / ".join(shown) if shown else "-"


def median_text(values, fmt=fmt):
    """The median alone (or the distinct texts), for the compact table."""
    nums = numbers(values)
    if nums is not None:
        return fmt(statistics.median(nums))
    shown = sorted({fmt(v) for v in values if v is not None})
    return " / ".join(shown) if shown else "-"


def main(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            objects = [json.loads(line) for line in f if line.strip()]
        runs.append({j["attack"]: j for j in objects})
    attacks = [a for a in KEY if any(a in r for r in runs)]

    def rows_of(a):
        rows = KEY[a]
        return SHAPES[rows] if isinstance(rows, str) else rows

    def measured(a):
        return [r[a] for r in runs if a in r and r[a].get("measured")]

    def m(got, path, unit=""):
        return with_unit(median_text, [get(j, path) for j in got], unit)

    print(f"Medians of {len(runs)} run(s).\n")
    print("| attack | what it did (medians) | writer stall | honest send→ack p50 / p99 | "
          "heartbeat p99 / max | honest logins ok / tried | server RSS before → peak → after | "
          "server CPU in attack |")
    print("|---|---|---|---|---|---|---|---|")
    for a in attacks:
        got = measured(a)
        key = "; ".join(f"{label} {m(got, path, unit)}" for label, path, unit in rows_of(a))
        ok = [get(j, "honest.attack.logins_ok") for j in got]
        bad = [get(j, "honest.attack.logins_failed") for j in got]
        tried = [o + b for o, b in zip(ok, bad) if o is not None and b is not None]
        print(f"| `{a}` | {key} | {m(got, 'honest.writer_stall_ms')} ms | "
              f"{m(got, 'honest.attack.send_to_ack.p50_ms')} / "
              f"{m(got, 'honest.attack.send_to_ack.p99_ms')} ms | "
              f"{m(got, 'honest.attack.heartbeat_rtt.p99_ms')} / "
              f"{m(got, 'honest.attack.heartbeat_rtt.max_ms')} ms | "
              f"{median_text(ok)} / {median_text(tried)} | "
              f"{m(got, 'server.rss_before_attack_mib')} → {m(got, 'server.rss_peak_attack_mib')} → "
              f"{m(got, 'server.rss_after_mib')} MiB | {m(got, 'server.cpu_secs_attack')} s in "
              f"{m(got, 'server.attack_secs')} s |")

    for a in attacks:
        got = measured(a)
        print(f"\n#### `{a}` ({len(got)} run{'s' if len(got) != 1 else ''})\n")
        print("| figure | median (runs) |")
        print("|---|---|")
        for label, path, unit in rows_of(a) + COMMON:
            values = [get(j, path) for j in got]
            print(f"| {label} | {with_unit(cell, values, unit)} |")
        failed = [r[a].get("error") for r in runs if a in r and not r[a].get("measured")]
        for e in failed:
            print(f"\nnot measured in one run: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
