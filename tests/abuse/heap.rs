//! What the test process (and so the in-process server) holds in memory.
//!
//! Two measures: the bytes the Rust global allocator has handed out and not yet taken back
//! (counted by [`Counting`], a wrapper around the system allocator installed for this test
//! binary), and the resident set size from `/proc/self/status`. The first sees an allocation
//! whole, whether or not its pages were touched yet (a read buffer reserved for a 1 MiB frame
//! counts 1 MiB even while 20 bytes of it are written), so it catches what a peer made the
//! server reserve; RocksDB's C++ allocations do not go through it. The second is what the
//! machine pays.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

/// The system allocator, counting the bytes in use.
pub struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            IN_USE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size() as isize, Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A reading of both measures, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub heap: i64,
    pub rss: i64,
}

impl Mem {
    pub fn now() -> Mem {
        Mem {
            heap: IN_USE.load(Relaxed) as i64,
            rss: rss(),
        }
    }

    /// What grew from `base` to `self`.
    pub fn since(self, base: Mem) -> Mem {
        Mem {
            heap: self.heap - base.heap,
            rss: self.rss - base.rss,
        }
    }

    /// Per connection, for `n` connections.
    pub fn per(self, n: usize) -> Mem {
        Mem {
            heap: self.heap / n as i64,
            rss: self.rss / n as i64,
        }
    }
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "heap {} B, RSS {} B", self.heap, self.rss)
    }
}

/// VmRSS of this process.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: i64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// CPU time this process has used (user and system), from `/proc/self/stat`.
pub fn cpu() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state (field 3).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    std::time::Duration::from_millis(ticks * 10)
}
