//! Latency histograms, the once-a-second progress line and the final report (table or JSON).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

/// A latency histogram in microseconds (1 µs .. 10 min, 3 significant digits), shared by tasks.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Mutex::new(
            Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        ))
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        self.0.lock().expect("histogram lock").saturating_record(us);
    }

    pub fn snapshot(&self) -> Histogram<u64> {
        self.0.lock().expect("histogram lock").clone()
    }
}

/// The first few errors of a run (five), kept as samples for the report; shared by tasks.
#[derive(Default)]
pub struct Samples(Mutex<Vec<String>>);

impl Samples {
    pub fn push(&self, what: String) {
        let mut errors = self.0.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
}

/// Prints `line()` to stderr once a second until the handle is aborted.
pub fn progress<F>(name: &'static str, line: F) -> JoinHandle<()>
where
    F: Fn() -> String + Send + 'static,
{
    let start = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            eprintln!(
                "[{name} {:>4.0}s] {}",
                start.elapsed().as_secs_f64(),
                line()
            );
        }
    })
}

/// The result of a scenario: named figures in order, and what went wrong.
pub struct Report {
    scenario: &'static str,
    rows: Vec<(String, Value, &'static str)>,
    json: Map<String, Value>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            rows: Vec::new(),
            json: Map::new(),
            failures: Vec::new(),
        }
    }

    /// One figure: shown in the table with its unit, and in the JSON under `key`.
    pub fn add(&mut self, key: &str, value: impl Into<Value>, unit: &'static str) {
        let value = value.into();
        self.json.insert(key.to_string(), value.clone());
        self.rows.push((key.to_string(), value, unit));
    }

    /// The figure under `key` (for tests).
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<Value> {
        self.json.get(key).cloned()
    }

    /// A figure rounded to `digits` decimals.
    pub fn add_f(&mut self, key: &str, value: f64, digits: i32, unit: &'static str) {
        let p = 10f64.powi(digits);
        self.add(key, (value * p).round() / p, unit);
    }

    /// Each of the samples as a row `sample error`.
    pub fn samples(&mut self, errors: &Samples) {
        for e in errors.0.lock().expect("errors lock").iter() {
            self.add("sample error", e.clone(), "");
        }
    }

    /// Something that makes the run fail (exit code 1).
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Latency figures of `h` (microseconds inside) in milliseconds under `prefix_*`; the
    /// JSON also gets the whole distribution as `prefix` {count, mean, p50, ..., max}.
    pub fn latency(&mut self, prefix: &str, h: &Histogram<u64>) {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        if h.is_empty() {
            self.add(&format!("{prefix}_count"), 0, "");
            return;
        }
        let q = [
            ("p50", 0.50),
            ("p90", 0.90),
            ("p99", 0.99),
            ("p99.9", 0.999),
        ];
        let mut all = Map::new();
        all.insert("count".into(), h.len().into());
        all.insert("mean_ms".into(), json!((h.mean() / 10.0).round() / 100.0));
        for (name, quantile) in q {
            let v = ms(h.value_at_quantile(quantile));
            self.rows.push((format!("{prefix} {name}"), v.into(), "ms"));
            all.insert(format!("{name}_ms"), v.into());
        }
        let max = ms(h.max());
        self.rows.push((format!("{prefix} max"), max.into(), "ms"));
        all.insert("max_ms".into(), max.into());
        self.json.insert(prefix.to_string(), Value::Object(all));
    }

    /// The table (stdout, or stderr when `json`), then the JSON on stdout if asked.
    pub fn print(&self, json: bool) {
        let mut text = format!("\n{} results\n", self.scenario);
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(10)
            .max(10);
        text.push_str(&format!("{:-<w$}\n", "", w = width + 24));
        for (key, value, unit) in &self.rows {
            let v = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            text.push_str(&format!("{key:<width$}  {v:>14} {unit}\n"));
        }
        text.push_str(&format!("{:-<w$}\n", "", w = width + 24));
        if self.failures.is_empty() {
            text.push_str("result: OK\n");
        } else {
            for f in &self.failures {
                text.push_str(&format!("FAILED: {f}\n"));
            }
        }
        if json {
            eprint!("{text}");
            let mut all = self.json.clone();
            all.insert("scenario".into(), self.scenario.into());
            all.insert("ok".into(), self.failures.is_empty().into());
            all.insert("failures".into(), json!(self.failures));
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(all)).expect("json")
            );
        } else {
            print!("{text}");
        }
    }
}
