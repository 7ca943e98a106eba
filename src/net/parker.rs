//! The epoll set of idle plain sockets, watched by one thread: an idle connection costs no task,
//! no timer and no tokio registration (the session side is `session::park`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// What waits for a socket in the [`Parker`].
pub trait Sleeper: Send + Sync {
    /// The socket is readable (called on the parker's thread).
    fn readable(&self);
    /// The parker stopped watching (it failed): the socket must go back to tokio.
    fn evict(self: Arc<Self>);
}

/// The epoll set of parked plain connections and the thread that watches it.
pub struct Parker {
    registry: mio::Registry,
    slots: Mutex<Slots>,
    stop: AtomicBool,
    /// Set (under the slots' lock) if the thread's poll failed: nothing more is parked here.
    broken: AtomicBool,
    waker: mio::Waker,
}

/// The nest of each parked socket, by the low 32 bits of its token; the high 32 bits are the
/// slot's generation, so that an event for a socket already gone finds nothing.
#[derive(Default)]
struct Slots {
    slots: Vec<(u32, Option<Arc<dyn Sleeper>>)>,
    free: Vec<u32>,
}

const STOP: mio::Token = mio::Token(usize::MAX);

impl Parker {
    /// Starts the parker's thread.
    pub fn start() -> io::Result<Arc<Parker>> {
        let poll = mio::Poll::new()?;
        let parker = Arc::new(Parker {
            registry: poll.registry().try_clone()?,
            slots: Mutex::default(),
            stop: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            waker: mio::Waker::new(poll.registry(), STOP)?,
        });
        let p = parker.clone();
        std::thread::Builder::new()
            .name("missive-park".into())
            .spawn(move || p.run(poll))?;
        Ok(parker)
    }

    /// Ends the parker's thread (at shutdown, once every session is done).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    fn run(self: Arc<Self>, mut poll: mio::Poll) {
        let mut events = mio::Events::with_capacity(256);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Only a bug can make epoll_wait fail. The sessions parked here are served
                // again by tasks, and later ones park with tokio (as TLS sessions do).
                tracing::error!("the parker's poll failed, its sessions go back to tokio: {e}");
                self.fail();
                return;
            }
            for event in events.iter() {
                if let Some(nest) = self.nest(event.token()) {
                    nest.readable();
                }
            }
        }
    }

    /// Whether the parker's thread has stopped watching its sockets.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Stops parking here and serves every session parked here again (their sockets go back to
    /// tokio). A session being parked meanwhile is refused by [`Parker::add`] (the flag is set
    /// under the same lock) and serves on.
    pub fn fail(&self) {
        let nests: Vec<Arc<dyn Sleeper>> = {
            let s = self.slots.lock();
            self.broken.store(true, Ordering::Release);
            s.slots.iter().filter_map(|(_, n)| n.clone()).collect()
        };
        for nest in nests {
            nest.evict();
        }
    }

    /// Watches `socket` for `nest` until [`Parker::remove`]; `nest` is told when it is readable.
    pub fn add(
        &self,
        socket: &mut mio::net::TcpStream,
        nest: Arc<dyn Sleeper>,
    ) -> io::Result<mio::Token> {
        let mut s = self.slots.lock();
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::other("the parker has stopped"));
        }
        let index = match s.free.pop() {
            Some(i) => i,
            None => {
                s.slots.push((0, None));
                (s.slots.len() - 1) as u32
            }
        };
        let slot = &mut s.slots[index as usize];
        slot.1 = Some(nest);
        let token = mio::Token(index as usize | (slot.0 as usize) << 32);
        if let Err(e) = self
            .registry
            .register(socket, token, mio::Interest::READABLE)
        {
            slot.1 = None;
            s.free.push(index);
            return Err(e);
        }
        Ok(token)
    }

    /// Stops watching `socket` (registered under `token`).
    pub fn remove(&self, socket: &mut mio::net::TcpStream, token: mio::Token) {
        let _ = self.registry.deregister(socket);
        let index = token.0 as u32;
        let mut s = self.slots.lock();
        let slot = &mut s.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = None;
        s.free.push(index);
    }

    fn nest(&self, token: mio::Token) -> Option<Arc<dyn Sleeper>> {
        if token == STOP {
            return None;
        }
        let s = self.slots.lock();
        let (generation, nest) = s.slots.get(token.0 as u32 as usize)?;
        if *generation as usize != token.0 >> 32 {
            return None;
        }
        nest.clone()
    }
}
