//! Abuse limits: connections in total and per source address, logins per second, sends per
//! second per connection (token buckets).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

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
        Bucket {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: Instant::now(),
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
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err((((n - self.tokens) / self.rate) * 1000.0).ceil() as u32)
        }
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
    ip: IpAddr,
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

    /// A place for a connection from `ip`, or `None` when a limit is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut open = self.open.lock();
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_total || per_ip >= self.max_per_ip {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, per_ip + 1);
        Some(Permit {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
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
}
