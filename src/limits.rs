//! Abuse limits: connections in total and per source address, logins per second, failed logins
//! per source address, sends per second per connection (token buckets).
//!
//! A source address is keyed by [`addr_key`]: an IPv6 address by its /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A rate limit in 32 bits, for state kept per connection for its whole life (the generic cell
/// rate algorithm): `tat` holds when, in ms (the clock's low 32 bits, wrapping every 49.7
/// days), the next request would be on time at `per_sec`; a request is allowed when that is at
/// most `burst - 1` intervals ahead of `now_ms`, and moves it one interval on. The same limit as
/// a token bucket of `per_sec` holding `burst`. A time not within one burst ahead of now is
/// stale (the connection was quiet) and counts as now; a stale time that happens to fall there
/// after a wrap (one chance in about two million) limits the connection for at most one burst.
pub fn take_rate(
    tat: &std::sync::atomic::AtomicU32,
    now_ms: u64,
    per_sec: u32,
    burst: u32,
) -> bool {
    use std::sync::atomic::Ordering;
    let now = now_ms as u32;
    let interval = 1000 / per_sec.clamp(1, 1000);
    let tolerance = interval.saturating_mul(burst.max(1) - 1);
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        let ahead = current.wrapping_sub(now);
        let base = if ahead == 0 || ahead > tolerance.saturating_add(interval) {
            now
        } else {
            current
        };
        if base.wrapping_sub(now) > tolerance {
            return false;
        }
        match tat.compare_exchange_weak(
            current,
            base.wrapping_add(interval),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(seen) => current = seen,
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32) -> Bucket {
        Bucket::full(rate, burst, Instant::now())
    }

    /// A bucket holding its whole burst at `now`.
    pub fn full(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: now,
        }
    }

    /// Takes a token; on refusal, returns how long until one is available (ms).
    pub fn take(&mut self, now: Instant) -> Result<(), u32> {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens at once (at most the burst: a larger `n` costs the whole burst); on
    /// refusal, takes none and returns how long until there are enough (ms).
    pub fn take_n(&mut self, now: Instant, n: u32) -> Result<(), u32> {
        let n = (n.max(1) as f64).min(self.burst);
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err((((n - self.tokens) / self.rate) * 1000.0).ceil() as u32)
        }
    }

    /// Whether a token is available, without taking it; if not, how long until one is (ms).
    pub fn check(&mut self, now: Instant) -> Result<(), u32> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u32)
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes a token whether or not one is left: the bucket may go into debt, down to minus its
    /// burst, and then needs that much more time to refill. For counting what happened rather
    /// than asking leave for it.
    pub fn charge(&mut self, now: Instant) {
        let _ = self.check(now);
        self.tokens = (self.tokens - 1.0).max(-self.burst);
    }

    /// Whether the bucket has refilled to its burst (it is then as good as a new one).
    pub fn is_full(&mut self, now: Instant) -> bool {
        let _ = self.check(now);
        self.tokens >= self.burst
    }
}

/// The key of a source address for the per-address limits: an IPv4 address as it is (and an
/// IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, as that IPv4 address), an IPv6 address by its
/// /64 (the rest zeroed). A subscriber is normally given a whole /64 and may use any address
/// in it, so counting full IPv6 addresses would let one client be 2^64 addresses.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Most addresses [`LoginFailures`] tracks (64 bytes each: about 5 MiB with the table's slack).
pub const MAX_FAILING_ADDRESSES: usize = 65_536;

/// Failed logins per source address ([`addr_key`]): each address has a token bucket of
/// `burst` failures refilling at `rate` per second, and each failed LOGIN (or pre-login framing
/// error) takes one, also when none is left (the failures of connections accepted before the
/// bucket ran dry still count: it goes into debt, at most the burst deep). While an address's
/// bucket holds less than one, its new connections are refused at accept (SERVER_BUSY), so a
/// flood of garbage LOGINs costs the server an accept and a write each, and never uses up the
/// server-wide login rate that valid logins need.
///
/// Bounded in memory: buckets that have refilled (as good as absent) are pruned, from the
/// heartbeat sweep and whenever the table is full; at most [`MAX_FAILING_ADDRESSES`] addresses
/// are tracked, and when that many are all still spent, failures of further addresses are not
/// counted until some refill.
#[derive(Debug)]
pub struct LoginFailures {
    rate: u32,
    burst: u32,
    max_addresses: usize,
    table: Mutex<HashMap<IpAddr, Bucket>>,
}

impl LoginFailures {
    pub fn new(rate: u32, burst: u32) -> LoginFailures {
        LoginFailures::with_capacity(rate, burst, MAX_FAILING_ADDRESSES)
    }

    /// A table tracking at most `max_addresses` addresses.
    pub fn with_capacity(rate: u32, burst: u32, max_addresses: usize) -> LoginFailures {
        LoginFailures {
            rate,
            burst,
            max_addresses,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failed login from `ip`.
    pub fn charge(&self, ip: IpAddr, now: Instant) {
        let key = addr_key(ip);
        let mut table = self.table.lock();
        if !table.contains_key(&key) && table.len() >= self.max_addresses {
            table.retain(|_, b| !b.is_full(now));
            if table.len() >= self.max_addresses {
                return;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        table
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, burst, now))
            .charge(now);
    }

    /// Whether `ip` may open a connection; `Err`: its failures are spent, with how long until
    /// one more is allowed (ms).
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u32> {
        match self.table.lock().get_mut(&addr_key(ip)) {
            Some(bucket) => bucket.check(now),
            None => Ok(()),
        }
    }

    /// Forgets the addresses whose buckets have refilled.
    pub fn prune(&self, now: Instant) {
        self.table.lock().retain(|_, b| !b.is_full(now));
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table.lock().len()
    }
}

/// Counts open connections, in total and per source address.
#[derive(Debug)]
pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Holds one connection's place; released on drop.
#[derive(Debug)]
pub struct Permit {
    table: Arc<Connections>,
    /// The address it counts under; `None` while deferred ([`Connections::admit_deferred`]).
    ip: Option<IpAddr>,
}

impl Connections {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Connections open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().0
    }

    /// A place for a connection from `ip` (counted under its [`addr_key`]), or `None` when a
    /// limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let ip = addr_key(ip);
        let mut open = self.open.lock();
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_total || per_ip >= self.max_per_ip {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, per_ip + 1);
        Some(Permit {
            table: self.clone(),
            ip: Some(ip),
        })
    }

    /// A place counted in the total only, for a connection whose real source address is not
    /// known yet (one from a forwarding cluster node, [`Forwarders`]): [`Permit::settle`] counts
    /// it under that address once known. `None` at the total limit.
    pub fn admit_deferred(self: &Arc<Self>) -> Option<Permit> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return None;
        }
        open.0 += 1;
        Some(Permit {
            table: self.clone(),
            ip: None,
        })
    }
}

impl Permit {
    /// Counts the permit under `ip` (a deferred one, or one counted under another address,
    /// which is released from it); false, and as it was, if `ip` is at its limit.
    pub fn settle(&mut self, ip: IpAddr) -> bool {
        let ip = addr_key(ip);
        if self.ip == Some(ip) {
            return true;
        }
        let mut open = self.table.open.lock();
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if per_ip >= self.table.max_per_ip {
            return false;
        }
        open.1.insert(ip, per_ip + 1);
        if let Some(old) = self.ip.replace(ip) {
            if let Some(n) = open.1.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    open.1.remove(&old);
                }
            }
        }
        true
    }

    /// Whether the permit waits for [`Permit::settle`].
    pub fn is_deferred(&self) -> bool {
        self.ip.is_none()
    }
}

/// Most forwarding nodes remembered (only a valid signed preamble adds one).
pub const MAX_FORWARDERS: usize = 256;

/// How long an address stays a forwarder after its last valid preamble.
pub const FORWARDER_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Source addresses that recently sent a valid forwarding preamble (the cluster's other nodes,
/// `cluster::forward`). A connection from one is admitted at accept in the total only: its
/// per-address limits and failed-login budget apply to the client address its preamble names,
/// once read, so the clients behind one forwarding node do not share one address's budget.
/// A connection from such an address without a preamble (a client on that host) is checked
/// under its own address at that point instead.
#[derive(Debug, Default)]
pub struct Forwarders {
    seen: Mutex<HashMap<IpAddr, Instant>>,
}

impl Forwarders {
    /// Whether `ip` sent a valid preamble within [`FORWARDER_TTL`] of `now`.
    pub fn contains(&self, ip: IpAddr, now: Instant) -> bool {
        let seen = self.seen.lock();
        seen.get(&addr_key(ip))
            .is_some_and(|t| now.saturating_duration_since(*t) < FORWARDER_TTL)
    }

    /// `ip` just sent a valid preamble.
    pub fn saw(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_FORWARDERS && !seen.contains_key(&addr_key(ip)) {
            seen.retain(|_, t| now.saturating_duration_since(*t) < FORWARDER_TTL);
            if seen.len() >= MAX_FORWARDERS {
                return;
            }
        }
        seen.insert(addr_key(ip), now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        open.0 = open.0.saturating_sub(1);
        let Some(ip) = self.ip else { return };
        if let Some(n) = open.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 2);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn a_costly_take_waits_for_its_whole_cost() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 200);
        assert!(b.take_n(t0, 150).is_ok());
        let wait = b.take_n(t0, 100).unwrap_err();
        assert!((500..=510).contains(&wait), "{wait}");
        assert!(b.take_n(t0, 50).is_ok(), "a refusal took nothing");
        assert!(
            b.take_n(t0 + Duration::from_secs(2), 1000).is_ok(),
            "capped at the burst"
        );
    }

    #[test]
    fn a_deferred_permit_counts_in_total_then_under_the_address_it_settles_on() {
        let c = Connections::new(3, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut d1 = c.admit_deferred().unwrap();
        let mut d2 = c.admit_deferred().unwrap();
        assert!(d1.is_deferred());
        assert_eq!(c.open_count(), 2);
        assert!(d1.settle(a));
        assert!(!d1.is_deferred());
        assert!(!d2.settle(a), "the address is at its limit");
        assert!(c.admit(a).is_none());
        let _p = c.admit("10.0.0.2".parse().unwrap()).unwrap();
        assert!(c.admit_deferred().is_none(), "in total");
        drop(d1);
        assert!(d2.settle(a), "released on drop");
        drop(d2);
        assert!(c.admit(a).is_some());
        // A permit counted under one address moves to another.
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap());
        let c = Connections::new(10, 1);
        let mut p = c.admit(x).unwrap();
        assert!(p.settle(y));
        assert!(c.admit(x).is_some(), "released from the first address");
        assert!(c.admit(y).is_none(), "counted under the second");
        assert_eq!(c.open_count(), 1);
    }

    #[test]
    fn forwarders_are_remembered_for_a_while_and_bounded() {
        let f = Forwarders::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!f.contains(a, t0));
        f.saw(a, t0);
        assert!(f.contains(a, t0 + FORWARDER_TTL / 2));
        assert!(!f.contains(a, t0 + FORWARDER_TTL));
        for i in 0..(MAX_FORWARDERS as u32 + 10) {
            f.saw(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(f.seen.lock().len() <= MAX_FORWARDERS);
    }

    #[test]
    fn connections_are_limited_in_total_and_per_address() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = c.admit(a).unwrap();
        let _p2 = c.admit(a).unwrap();
        assert!(c.admit(a).is_none(), "per address");
        let _p3 = c.admit(b).unwrap();
        assert!(c.admit(b).is_none(), "in total");
        drop(p1);
        assert!(c.admit(a).is_some(), "released on drop");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_keyed_by_ipv4_or_ipv6_slash_64() {
        assert_eq!(addr_key(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_ne!(addr_key(ip("10.0.0.1")), addr_key(ip("10.0.0.2")));
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(addr_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        // One /64 is one key, whatever the interface id; the next /64 is another.
        let a = addr_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(a, addr_key(ip("2001:db8:1:2::1")));
        assert_ne!(a, addr_key(ip("2001:db8:1:3::1")));
        assert_ne!(a, addr_key(ip("2001:db8:2:2::1")));
        // So is the connection limit.
        let c = Connections::new(10, 2);
        let _p1 = c.admit(ip("2001:db8:1:2::1")).unwrap();
        let _p2 = c.admit(ip("2001:db8:1:2::ffff")).unwrap();
        assert!(c.admit(ip("2001:db8:1:2:1:2:3:4")).is_none(), "same /64");
        assert!(c.admit(ip("2001:db8:1:3::1")).is_some(), "next /64");
        let _v4 = c.admit(ip("10.0.0.9")).unwrap();
        let _v4 = c.admit(ip("::ffff:10.0.0.9")).unwrap();
        assert!(c.admit(ip("10.0.0.9")).is_none(), "mapped counts as IPv4");
    }

    #[test]
    fn login_failures_are_budgeted_per_address_and_forgotten_once_refilled() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let f = LoginFailures::new(10, 3);
        let attacker = ip("2001:db8::1");
        for _ in 0..3 {
            assert!(f.check(attacker, t0).is_ok());
            f.charge(attacker, t0);
        }
        // Spent, for every address of the /64; refilled after a tenth of a second.
        let wait = f.check(ip("2001:db8::2"), t0).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        assert!(f.check(ip("2001:db8:0:1::1"), t0).is_ok(), "another /64");
        assert!(f.check(ip("10.0.0.1"), t0).is_ok(), "another address");
        // A failure of a connection accepted before counts all the same: one more to wait.
        f.charge(attacker, t0);
        let wait = f.check(attacker, t0).unwrap_err();
        assert!((190..=200).contains(&wait), "{wait}");
        assert!(f.check(attacker, ms(150)).is_err());
        assert!(f.check(attacker, ms(250)).is_ok());
        // Pruned only once full again (4 failures' worth: 400 ms).
        f.charge(ip("10.0.0.1"), t0);
        assert_eq!(f.tracked(), 2);
        f.prune(ms(300));
        assert_eq!(f.tracked(), 1, "10.0.0.1 refilled, the attacker not yet");
        f.prune(ms(500));
        assert_eq!(f.tracked(), 0);
        // The debt is at most the burst deep.
        for _ in 0..100 {
            f.charge(attacker, ms(500));
        }
        let wait = f.check(attacker, ms(500)).unwrap_err();
        assert!((390..=400).contains(&wait), "{wait}");
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let t0 = Instant::now();
        let f = LoginFailures::with_capacity(1, 1, 4);
        for i in 0..4 {
            f.charge(IpAddr::from([10, 0, 0, i]), t0);
        }
        // Full of spent buckets: a fifth address is not tracked (and so not refused).
        f.charge(ip("10.0.0.9"), t0);
        assert_eq!(f.tracked(), 4);
        assert!(f.check(ip("10.0.0.9"), t0).is_ok());
        // Once some have refilled, there is room again.
        let later = t0 + Duration::from_secs(1);
        f.charge(ip("10.0.0.9"), later);
        assert_eq!(f.tracked(), 1);
        assert!(f.check(ip("10.0.0.9"), later).is_err());
    }
}

#[cfg(test)]
mod rate_tests {
    use std::sync::atomic::AtomicU32;

    use super::take_rate;

    #[test]
    fn a_burst_then_the_rate() {
        let tat = AtomicU32::new(0);
        let t0 = 1_000_000;
        let allowed = (0..50).filter(|_| take_rate(&tat, t0, 5, 10)).count();
        assert_eq!(allowed, 10, "the burst");
        assert!(!take_rate(&tat, t0 + 199, 5, 10));
        assert!(take_rate(&tat, t0 + 200, 5, 10), "one more each 200 ms");
        assert!(!take_rate(&tat, t0 + 200, 5, 10));
        // Quiet for long enough: the whole burst again, and no more.
        let later = t0 + 10_000;
        assert_eq!(
            (0..50).filter(|_| take_rate(&tat, later, 5, 10)).count(),
            10
        );
    }
}
