//! Counters of one server, rendered in the Prometheus text format at `/metrics` (see
//! `http::metrics`). Relaxed atomics only: counting a message costs an uncontended
//! `fetch_add`, never a lock. Gauges (connections, queue depths) are read from their owners
//! when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use missive_protocol::ErrorCode;

/// Slots for results by protocol error code (codes are small numbers; 0 stands for success).
const CODES: usize = 32;

/// Every counter of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted (within the connection limits) and refused at them.
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    /// Connections refused at accept because their address used up its failed-login budget.
    pub login_failure_refusals: Counter,
    /// LOGINs by result: slot 0 success, else the refusing error code.
    logins: ByCode,
    /// SENDs stored (not duplicates), from sockets and from the HTTP API.
    pub messages_in_socket: Counter,
    pub messages_in_http: Counter,
    /// SENDs answered with the first send's ack (repeated client message id).
    pub sends_duplicate: Counter,
    /// PUSH frames written to connections (first attempts), and resent unacknowledged ones.
    pub pushes_out: Counter,
    pub pushes_retransmitted: Counter,
    /// GROUP_NOTIFY frames written.
    pub group_notifies_out: Counter,
    /// SYNC pages served.
    pub sync_pages: Counter,
    /// ERROR frames sent and HTTP API errors, by code.
    errors: ByCode,
    /// Sessions kicked by a drain.
    pub drain_kicks: Counter,
    /// Sessions kicked through the HTTP API.
    pub admin_kicks: Counter,
    /// HTTP API requests answered.
    pub http_requests: Counter,
    /// HTTP API connections refused at `http_max_connections`.
    pub http_connections_refused: Counter,
    /// HTTP API connections closed because a request head or body missed its deadline
    /// (`http_header_timeout_ms`, `http_body_timeout_ms`).
    pub http_timeouts: Counter,
    /// Idle sessions parked (task, timer and buffers given up), and parked sessions revived.
    pub sessions_parked: Counter,
    pub sessions_revived: Counter,
    /// SIGNAL_NOTIFY frames queued for sessions or written in place to parked ones; those not
    /// sent (the device in the background, the session closing, its queue full, or its parked
    /// socket full); SIGNALs dropped unread over the sender's rate.
    pub signals_relayed: Counter,
    pub signals_dropped: Counter,
    pub signals_rate_limited: Counter,
}

impl Metrics {
    pub fn login(&self, result: Result<(), ErrorCode>) {
        self.logins.add(result.err());
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors.add(Some(code));
    }

    /// LOGINs that succeeded, and those refused with `code`.
    pub fn logins(&self, code: Option<ErrorCode>) -> u64 {
        self.logins.get(code)
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors.get(Some(code))
    }

    /// Writes the counters (not the gauges, which their owners know) in the text format.
    pub fn render(&self, out: &mut Text) {
        out.counter(
            "missive_connections_accepted_total",
            "Connections accepted within the connection limits.",
            self.connections_accepted.get(),
        );
        out.counter(
            "missive_connections_refused_total",
            "Connections refused at the connection limits (SERVER_BUSY).",
            self.connections_refused.get(),
        );
        out.counter(
            "missive_login_failure_refusals_total",
            "Connections refused at accept (SERVER_BUSY) because their source address (IPv6: its /64) used up its failed-login budget.",
            self.login_failure_refusals.get(),
        );
        out.header(
            "missive_logins_total",
            "counter",
            "LOGIN requests by result: ok, or the refusing error's name.",
        );
        out.sample(
            "missive_logins_total",
            &[("result", "ok")],
            self.logins.get(None),
        );
        for code in ErrorCode::ALL {
            let n = self.logins.get(Some(*code));
            if n > 0 {
                out.sample("missive_logins_total", &[("result", code.name())], n);
            }
        }
        out.header(
            "missive_messages_in_total",
            "counter",
            "Messages stored (sends accepted, duplicates not counted), by where they came from.",
        );
        let via = [
            ("socket", self.messages_in_socket.get()),
            ("http", self.messages_in_http.get()),
        ];
        for (name, n) in via {
            out.sample("missive_messages_in_total", &[("via", name)], n);
        }
        out.counter(
            "missive_sends_duplicate_total",
            "Sends of a client message id already stored (answered with the first ack).",
            self.sends_duplicate.get(),
        );
        out.counter(
            "missive_pushes_out_total",
            "PUSH frames written to connections (first attempts).",
            self.pushes_out.get(),
        );
        out.counter(
            "missive_pushes_retransmitted_total",
            "PUSH frames written again because they were not acknowledged in time.",
            self.pushes_retransmitted.get(),
        );
        out.counter(
            "missive_group_notifies_out_total",
            "GROUP_NOTIFY frames written to connections.",
            self.group_notifies_out.get(),
        );
        out.counter(
            "missive_sync_pages_total",
            "SYNC pages served.",
            self.sync_pages.get(),
        );
        out.header(
            "missive_errors_total",
            "counter",
            "ERROR frames sent and HTTP API errors, by protocol error code.",
        );
        for code in ErrorCode::ALL {
            let n = self.errors.get(Some(*code));
            if n > 0 {
                let number = (*code as u32).to_string();
                let labels = [("code", number.as_str()), ("name", code.name())];
                out.sample("missive_errors_total", &labels, n);
            }
        }
        out.counter(
            "missive_drain_kicks_total",
            "Connections moved away by a drain (KICK REDIRECT).",
            self.drain_kicks.get(),
        );
        out.counter(
            "missive_admin_kicks_total",
            "Connections kicked through the HTTP API (KICK ADMIN).",
            self.admin_kicks.get(),
        );
        out.counter(
            "missive_http_requests_total",
            "HTTP API requests answered.",
            self.http_requests.get(),
        );
        out.counter(
            "missive_http_connections_refused_total",
            "HTTP API connections refused at http_max_connections (503 SERVER_BUSY).",
            self.http_connections_refused.get(),
        );
        out.counter(
            "missive_http_timeouts_total",
            "HTTP API connections closed for a request head or body that missed its deadline (not idle ones).",
            self.http_timeouts.get(),
        );
        let (parked, revived) = (self.sessions_parked.get(), self.sessions_revived.get());
        out.gauge(
            "missive_sessions_parked",
            "Idle sessions parked now: no task, timer or buffer until the client or the router wakes them.",
            parked.saturating_sub(revived),
        );
        out.counter(
            "missive_session_parks_total",
            "Times an idle session was parked (park_idle_ms without anything to do).",
            parked,
        );
        out.counter(
            "missive_signals_relayed_total",
            "SIGNAL_NOTIFY frames queued for online sessions or written in place to parked ones (ephemeral: typing and the like).",
            self.signals_relayed.get(),
        );
        out.counter(
            "missive_signals_dropped_total",
            "SIGNAL_NOTIFY frames not sent: the device in the background, the session closing, its queue full or its parked socket full.",
            self.signals_dropped.get(),
        );
        out.counter(
            "missive_signals_rate_limited_total",
            "SIGNAL requests dropped unread because the connection sent them over its signal rate.",
            self.signals_rate_limited.get(),
        );
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters by error code (slot 0: no error).
#[derive(Debug)]
struct ByCode([AtomicU64; CODES]);

impl Default for ByCode {
    fn default() -> Self {
        ByCode(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl ByCode {
    fn slot(code: Option<ErrorCode>) -> usize {
        code.map_or(0, |c| (c as usize).min(CODES - 1))
    }

    fn add(&self, code: Option<ErrorCode>) {
        self.0[Self::slot(code)].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, code: Option<ErrorCode>) -> u64 {
        self.0[Self::slot(code)].load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// A latency histogram with fixed buckets (one atomic add per bucket hit, one for the sum).
#[derive(Debug)]
pub struct Histogram {
    /// Observations at most `BUCKETS_US[i]`, not cumulative; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let slot = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the histogram `name` (in seconds) in the text format.
    pub fn render(&self, out: &mut Text, name: &str, help: &str) {
        out.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, upper) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = format!("{}", *upper as f64 / 1e6);
            out.sample(&bucket, &[("le", le.as_str())], cumulative);
        }
        cumulative += self.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
        out.sample(&bucket, &[("le", "+Inf")], cumulative);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out.0, "{name}_sum {sum}");
        let _ = writeln!(out.0, "{name}_count {cumulative}");
    }
}

/// Prometheus text exposition format (version 0.0.4) being written.
#[derive(Debug, Default)]
pub struct Text(pub String);

impl Text {
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        self.sample(name, &[], value);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(20));
        let mut t = Text::default();
        h.render(&mut t, "x_seconds", "test");
        let text = t.0;
        assert!(
            text.contains("x_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("x_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum 20.00074\n"), "{text}");
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn results_by_code_are_labelled_with_the_protocol_names() {
        let m = Metrics::default();
        m.login(Ok(()));
        m.login(Err(ErrorCode::AuthFailed));
        m.error(ErrorCode::AuthFailed);
        let mut t = Text::default();
        m.render(&mut t);
        let text = t.0;
        assert!(
            text.contains("missive_logins_total{result=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("missive_logins_total{result=\"AUTH_FAILED\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("missive_errors_total{code=\"9\",name=\"AUTH_FAILED\"} 1\n"),
            "{text}"
        );
    }
}
