//! The arithmetic of the abuse figures, kept apart from the I/O so it can be unit-tested:
//! percentiles, phases, memory per connection, the member ids of the huge GROUP_CREATE and the
//! `--attack` list.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The attacks, in the order `all` runs them (the order).
pub const ATTACKS: &[&str] = &[
    "group-create-huge",
    "unread-many-groups",
    "mark-read",
    "sync-pipeline",
    "history-pipeline",
    "contacts-pipeline",
    "group-list-many",
    "prelogin-buffer",
    "prelogin-buffer-ws",
    "prelogin-header",
    "login-garbage",
    "zlib-bomb",
    "http-slow",
];

/// `--attack` values (comma-separated or repeated; `all` = every attack) in the order given,
/// without repeats; an unknown name is an error that lists the known ones.
pub fn parse_attacks(given: &[String]) -> Result<Vec<&'static str>, String> {
    let mut out: Vec<&'static str> = Vec::new();
    let mut push = |name: &'static str| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    for raw in given.iter().flat_map(|g| g.split(',')) {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        if name == "all" {
            ATTACKS.iter().for_each(|a| push(a));
            continue;
        }
        match ATTACKS.iter().find(|a| **a == name) {
            Some(a) => push(a),
            None => {
                return Err(format!(
                    "unknown attack {name:?}; known: all, {}",
                    ATTACKS.join(", ")
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("no attack named (--attack NAME or all)".into());
    }
    Ok(out)
}

/// Nearest-rank quantile of sorted values (`q` in 0..=1): the smallest value with at least
/// q·n values at or below it. `None` for no values.
pub fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// p50, p99 and max of some latencies (any order) as JSON milliseconds, with the count.
pub fn latency_json(values: &[Duration]) -> Value {
    let mut v = values.to_vec();
    v.sort_unstable();
    let q = |q: f64| quantile(&v, q).map(ms);
    json!({
        "count": v.len(),
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": v.last().copied().map(ms),
    })
}

/// "p50/p99/max" in ms for the one-line summary ("-" without values).
pub fn latency_text(values: &[Duration]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (quantile(&v, 0.5), quantile(&v, 0.99), v.last()) {
        (Some(a), Some(b), Some(c)) => {
            format!("{}/{}/{} ms", short_ms(a), short_ms(b), short_ms(*c))
        }
        _ => "-".into(),
    }
}

/// Milliseconds for a person, without the unit: "0.42", "12.3", "812", "58,204".
pub fn short_ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2}")
    } else if m < 100.0 {
        format!("{m:.1}")
    } else {
        let whole = m.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
}

/// The phases of a run: honest traffic alone, the attack, honest traffic alone again.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub baseline: Instant,
    pub attack: Instant,
    pub after: Instant,
}

/// Which phase a moment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    Baseline,
    Attack,
    After,
}

impl Phases {
    /// The phase of `t`: `[baseline, attack)` baseline, `[attack, after)` attack, from `after`
    /// on after (including what was scheduled past `end`, while the honest side wound down).
    pub fn of(&self, t: Instant) -> Phase {
        if t < self.baseline {
            Phase::Before
        } else if t < self.attack {
            Phase::Baseline
        } else if t < self.after {
            Phase::Attack
        } else {
            Phase::After
        }
    }

    /// The phase a probe counts in: the attack's if it overlapped the attack (due during it, or
    /// due before and still waiting for its answer when the attack began: a send that the
    /// attack stalled counts there), else the phase it was due in. `took`: how long it took,
    /// if it was answered.
    pub fn classify(&self, due: Instant, took: Option<Duration>) -> Phase {
        let phase = self.of(due);
        let done = took.map(|d| due + d);
        if matches!(phase, Phase::Before | Phase::Baseline) && done.is_some_and(|d| d > self.attack)
        {
            return Phase::Attack;
        }
        phase
    }

    pub fn attack_secs(&self) -> f64 {
        self.after
            .saturating_duration_since(self.attack)
            .as_secs_f64()
    }

    pub fn baseline_secs(&self) -> f64 {
        self.attack
            .saturating_duration_since(self.baseline)
            .as_secs_f64()
    }
}

/// Bytes per connection of a memory increase in KiB (0 connections: `None`).
pub fn per_connection_bytes(before_kib: u64, at_kib: u64, connections: usize) -> Option<f64> {
    (connections > 0)
        .then(|| at_kib.saturating_sub(before_kib) as f64 * 1024.0 / connections as f64)
}

/// The RSS sample (offset, KiB) at which the most connections were open (up by then and not
/// yet closed; of those samples, the highest RSS), with that count: the memory that many open
/// connections held at once. `up` and `closed` are offsets too, in any order.
pub fn most_open(
    samples: &[(Duration, u64)],
    up: &[Duration],
    closed: &[Duration],
) -> Option<(usize, u64)> {
    samples
        .iter()
        .map(|&(t, kib)| {
            let open = up
                .iter()
                .filter(|d| **d <= t)
                .count()
                .saturating_sub(closed.iter().filter(|d| **d <= t).count());
            (open, kib)
        })
        .max()
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// A byte count for a person: "812 B", "4.0 KiB", "1.52 MiB", "2.10 GiB".
pub fn bytes_text(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The fewest characters that give `n` distinct ids over [`ID_ALPHABET`].
pub fn id_width(n: usize) -> usize {
    let mut width = 1;
    let mut distinct = ID_ALPHABET.len();
    while distinct < n {
        width += 1;
        distinct = distinct.saturating_mul(ID_ALPHABET.len());
    }
    width
}

/// Member id number `i` of `width` characters: the shortest distinct ids, so that 200,000 of
/// them fit one frame (3 characters and 2 bytes of protobuf framing each: 1,000,000 bytes).
pub fn short_id(mut i: usize, width: usize) -> String {
    let base = ID_ALPHABET.len();
    let mut out = vec![ID_ALPHABET[0]; width];
    for slot in out.iter_mut().rev() {
        *slot = ID_ALPHABET[i % base];
        i /= base;
    }
    String::from_utf8(out).expect("ASCII alphabet")
}

/// `n` distinct member ids of the same, smallest width.
pub fn member_ids(n: usize) -> Vec<String> {
    let width = id_width(n);
    (0..n).map(|i| short_id(i, width)).collect()
}

/// How many copies of a request of `frame_len` bytes fit in `read_chunk` bytes: the server
/// reads 4 KiB at a time and handles every complete frame of a read before it writes, so this
/// many replies pile up at once (195 SYNCs of 21 bytes in 4,096).
pub fn fit_in_read(frame_len: usize, read_chunk: usize) -> usize {
    read_chunk.checked_div(frame_len).unwrap_or(0).max(1)
}

/// Per second, with one decimal (0 for an empty window).
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (count as f64 / secs * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_protocol::{pb, Frame, Packet, DEFAULT_MAX_FRAME_LEN};

    #[test]
    fn attacks_parse_all_lists_and_rejects() {
        assert_eq!(parse_attacks(&["all".into()]).unwrap(), ATTACKS);
        assert_eq!(
            parse_attacks(&["zlib-bomb,mark-read".into(), "zlib-bomb".into()]).unwrap(),
            vec!["zlib-bomb", "mark-read"]
        );
        let err = parse_attacks(&["nope".into()]).unwrap_err();
        assert!(err.contains("http-slow"), "{err}");
        assert!(parse_attacks(&[]).is_err());
        assert!(parse_attacks(&[" , ".into()]).is_err());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
        let one = [Duration::from_secs(58)];
        assert_eq!(quantile(&one, 0.99), Some(Duration::from_secs(58)));
        // Unsorted input is sorted by the JSON helper.
        let j = latency_json(&[Duration::from_millis(3), Duration::from_millis(1)]);
        assert_eq!(j["max_ms"], json!(3.0));
        assert_eq!(j["p50_ms"], json!(1.0));
        assert_eq!(latency_text(&[]), "-");
        assert_eq!(short_ms(Duration::from_micros(4260)), "4.26");
        assert_eq!(short_ms(Duration::from_micros(52_540)), "52.5");
        assert_eq!(short_ms(Duration::from_millis(812)), "812");
        assert_eq!(short_ms(Duration::from_millis(58_204)), "58,204");
        assert_eq!(short_ms(Duration::from_secs(1234)), "1,234,000");
    }

    #[test]
    fn phases_split_at_their_bounds() {
        let t0 = Instant::now();
        let p = Phases {
            baseline: t0,
            attack: t0 + Duration::from_secs(3),
            after: t0 + Duration::from_secs(13),
        };
        assert_eq!(p.of(t0 + Duration::from_millis(2999)), Phase::Baseline);
        assert_eq!(p.of(t0 + Duration::from_secs(3)), Phase::Attack);
        assert_eq!(p.of(t0 + Duration::from_secs(13)), Phase::After);
        assert_eq!(p.of(t0 + Duration::from_secs(20)), Phase::After);
        // A send due just before the attack and stalled by it counts in the attack.
        let due = t0 + Duration::from_millis(2990);
        assert_eq!(
            p.classify(due, Some(Duration::from_secs(58))),
            Phase::Attack
        );
        assert_eq!(
            p.classify(due, Some(Duration::from_millis(5))),
            Phase::Baseline
        );
        assert_eq!(p.classify(due, None), Phase::Baseline);
        // One due during the attack stays there however long it took.
        let due = t0 + Duration::from_secs(12);
        assert_eq!(
            p.classify(due, Some(Duration::from_secs(58))),
            Phase::Attack
        );
        assert_eq!(p.classify(t0 + Duration::from_secs(14), None), Phase::After);
        assert!((p.attack_secs() - 10.0).abs() < 1e-9);
        assert!((p.baseline_secs() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn memory_per_connection() {
        // 2,000 connections that took 24 MiB to 2,024 MiB hold 1 MiB... per connection.
        let per = per_connection_bytes(24 * 1024, 2024 * 1024, 2000).unwrap();
        assert!((per - 1_048_576.0).abs() < 1.0);
        assert_eq!(per_connection_bytes(10, 5, 3), Some(0.0));
        assert_eq!(per_connection_bytes(1, 2, 0), None);
        assert_eq!(mib(1536), 1.5);
        assert_eq!(bytes_text(512.0), "512 B");
        assert_eq!(bytes_text(1.5 * 1024.0 * 1024.0), "1.50 MiB");
        assert_eq!(rate(77, 10.0), 7.7);
        assert_eq!(rate(5, 0.0), 0.0);
    }

    #[test]
    fn the_sample_with_the_most_connections_open() {
        let s = |ms: u64| Duration::from_millis(ms);
        let up = [s(100), s(200), s(300)];
        let closed = [s(1000)];
        // At 500 ms all three are open; at 1,100 ms one has closed but RSS is higher (memory
        // kept after a close must not be charged to fewer connections).
        let samples = [(s(50), 10), (s(250), 20), (s(500), 30), (s(1100), 40)];
        assert_eq!(most_open(&samples, &up, &closed), Some((3, 30)));
        let samples = [(s(500), 30), (s(600), 35)];
        assert_eq!(most_open(&samples, &up, &closed), Some((3, 35)));
        assert_eq!(most_open(&[], &up, &closed), None);
    }

    #[test]
    fn two_hundred_thousand_members_fit_one_frame() {
        let ids = member_ids(200_000);
        assert_eq!(id_width(200_000), 3);
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), 200_000);
        assert!(ids.iter().all(|i| i.len() == 3));
        let packet = Packet::GroupCreate(pb::GroupCreate {
            name: "big".into(),
            members: ids,
            history: 0,
            ..Default::default()
        });
        let frame = Frame::new(&packet, 1);
        assert_eq!(frame.body.len(), 200_000 * 5 + 5);
        // The length field (all but its own 4 bytes) is within the 1 MiB limit.
        assert!(frame.encoded_len() - 4 <= DEFAULT_MAX_FRAME_LEN);
        assert_eq!(short_id(0, 3), "000");
        assert_eq!(short_id(61, 2), "0z");
        assert_eq!(short_id(62, 2), "10");
        assert_eq!(id_width(62), 1);
        assert_eq!(id_width(63), 2);
    }

    #[test]
    fn pipelined_requests_per_server_read() {
        // SYNC{since 0, limit 5000}: an 18-byte frame plus 3 body bytes.
        let sync = Frame::new(
            &Packet::Sync(pb::Sync {
                since_version: 0,
                limit: 5000,
            }),
            7,
        );
        assert_eq!(sync.encoded_len(), 21);
        assert_eq!(fit_in_read(sync.encoded_len(), 4096), 195);
        assert_eq!(fit_in_read(5000, 4096), 1);
        assert_eq!(fit_in_read(0, 4096), 1);
    }
}
