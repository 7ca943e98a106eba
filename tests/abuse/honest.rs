//! An honest pair chatting next to an attack, and what it saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_client::{direct, pb, Client, ClientEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::common::TestServer;

/// Serializes the tests of this binary: each attack gets the machine to itself.
/// Each test runs on a runtime of its own thread, so a blocking lock is fine; a test that
/// panicked does not stop the others.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Time between two messages of the pair (each side sends every other one).
const PACE: Duration = Duration::from_millis(20);

/// Two users, `honest-a` and `honest-b`, each on a reliable client, sending each other a message
/// every [`PACE`] in turn and pinging the server, until [`HonestPair::finish`].
pub struct HonestPair {
    stop: Arc<AtomicBool>,
    task: JoinHandle<PairReport>,
}

/// What the pair saw.
#[derive(Debug, Default)]
pub struct PairReport {
    pub sent: usize,
    /// Sends answered with SEND_ACK.
    pub acked: usize,
    /// Sends refused or failed (with why).
    pub failed: Vec<String>,
    /// Messages that reached the other side, once each.
    pub delivered: usize,
    /// Messages that reached the other side more than once.
    pub duplicated: usize,
    /// Acked messages that never reached the other side.
    pub lost: usize,
    /// Send to delivery at the peer, sorted.
    pub latencies: Vec<Duration>,
    /// HEARTBEAT round trips, sorted.
    pub pings: Vec<Duration>,
}

impl PairReport {
    fn quantile(v: &[Duration], q: f64) -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    pub fn p50(&self) -> Duration {
        Self::quantile(&self.latencies, 0.5)
    }

    pub fn p99(&self) -> Duration {
        Self::quantile(&self.latencies, 0.99)
    }

    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    pub fn max_ping(&self) -> Duration {
        self.pings.last().copied().unwrap_or_default()
    }

    /// One line for RELIABILITY.md.
    pub fn summary(&self) -> String {
        format!(
            "honest pair: {} sent, {} acked, {} delivered, {} lost, {} duplicated; delivery \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; heartbeat max {:.1} ms",
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            ms(self.p50()),
            ms(self.p99()),
            ms(self.max()),
            ms(self.max_ping()),
        )
    }

    /// The pair lost nothing, got nothing twice, had every send acked, and no delivery (nor
    /// heartbeat) took longer than `bound`.
    pub fn assert_healthy(&self, bound: Duration) {
        assert!(
            self.sent >= 10,
            "the pair hardly chatted: {}",
            self.summary()
        );
        assert!(
            self.failed.is_empty(),
            "honest sends failed: {:?}; {}",
            &self.failed[..self.failed.len().min(5)],
            self.summary()
        );
        assert_eq!(self.acked, self.sent, "{}", self.summary());
        assert_eq!(self.lost, 0, "{}", self.summary());
        assert_eq!(self.duplicated, 0, "{}", self.summary());
        assert_eq!(self.delivered, self.acked, "{}", self.summary());
        assert!(
            self.max() <= bound && self.max_ping() <= bound,
            "honest latency above {bound:?}: {}",
            self.summary()
        );
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl HonestPair {
    /// Logs both in and starts chatting.
    pub async fn start(server: &TestServer) -> HonestPair {
        let (a, a_events) = server.client("honest-a", "phone").await;
        let (b, b_events) = server.client("honest-b", "phone").await;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(chat(a, a_events, b, b_events, stop.clone()));
        HonestPair { stop, task }
    }

    /// Stops sending, waits (up to 10 s) for what is in flight to arrive, and reports.
    pub async fn finish(self) -> PairReport {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the honest pair's task")
    }
}

/// Message text: "<n>" where n numbers the pair's messages.
async fn chat(
    a: Client,
    mut a_events: UnboundedReceiver<ClientEvent>,
    b: Client,
    mut b_events: UnboundedReceiver<ClientEvent>,
    stop: Arc<AtomicBool>,
) -> PairReport {
    let mut report = PairReport::default();
    // n -> when it was sent; filled in as acks come.
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut acked = Vec::new();
    let mut next = Instant::now();
    let mut n = 0u64;
    // An entry that reached `receiver`. Each side's own sends also come back to it (its inbox
    // holds them, and the client syncs them in): only the peer's messages are deliveries.
    // `sent_at` is passed in: the loop below inserts into it while the closure lives.
    let mut record = |entry: pb::InboxEntry,
                      receiver: &str,
                      at: Instant,
                      report: &mut PairReport,
                      sent_at: &HashMap<u64, Instant>| {
        let Some(pb::inbox_entry::Body::Message(m)) = entry.body else {
            return;
        };
        if m.from_user == receiver {
            return;
        }
        let Some(k) = std::str::from_utf8(&m.content)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let count = seen.entry(k).or_default();
        *count += 1;
        if *count > 1 {
            report.duplicated += 1;
            return;
        }
        report.delivered += 1;
        if let Some(t) = sent_at.get(&k) {
            report.latencies.push(at.saturating_duration_since(*t));
        }
    };
    let mut pings = tokio::time::interval(Duration::from_millis(200));
    while !stop.load(Ordering::SeqCst) {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                next += PACE;
                let (from, to) = if n.is_multiple_of(2) { (&a, "honest-b") } else { (&b, "honest-a") };
                sent_at.insert(n, Instant::now());
                report.sent += 1;
                match from.send(direct(to), 1, n.to_string(), None).await {
                    Ok(_) => {
                        report.acked += 1;
                        acked.push(n);
                    }
                    Err(e) => report.failed.push(format!("message {n}: {e}")),
                }
                n += 1;
            }
            _ = pings.tick() => {
                if let Ok(rtt) = a.ping().await {
                    report.pings.push(rtt);
                }
            }
            Some(ev) = a_events.recv() => {
                if let ClientEvent::Entry(e) = ev {
                    record(e, "honest-a", Instant::now(), &mut report, &sent_at)
                }
            }
            Some(ev) = b_events.recv() => {
                if let ClientEvent::Entry(e) = ev {
                    record(e, "honest-b", Instant::now(), &mut report, &sent_at)
                }
            }
        }
    }
    // What was acked must arrive; wait up to 10 s for the rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    while report.delivered < acked.len() && Instant::now() < deadline {
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            Some(ev) = a_events.recv() => {
                if let ClientEvent::Entry(e) = ev {
                    record(e, "honest-a", Instant::now(), &mut report, &sent_at)
                }
            }
            Some(ev) = b_events.recv() => {
                if let ClientEvent::Entry(e) = ev {
                    record(e, "honest-b", Instant::now(), &mut report, &sent_at)
                }
            }
            _ = tokio::time::sleep(wait) => break,
        }
    }
    report.lost = acked.iter().filter(|k| !seen.contains_key(k)).count();
    report.latencies.sort();
    report.pings.sort();
    a.close().await;
    b.close().await;
    report
}

/// A sanity check of the pair itself: with no attack it chats without loss or delay.
#[tokio::test]
async fn the_honest_pair_alone_is_healthy() {
    let _g = exclusive();
    let server = TestServer::start().await;
    let pair = HonestPair::start(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = pair.finish().await;
    println!("no attack: {}", report.summary());
    report.assert_healthy(Duration::from_millis(500));
    server.stop().await;
}
