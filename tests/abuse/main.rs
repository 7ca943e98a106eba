//! The hostile battery: each test attacks a real missived on 127.0.0.1 the way a hostile client
//! would (the cheapest request that makes the server do or hold the most) while an honest pair
//! chats alongside ([`honest::HonestPair`]), and asserts that the attack is bounded and that the
//! pair loses nothing and keeps a bounded latency.
//!
//! The tests of this binary run one at a time ([`honest::exclusive`]): two attacks at once on a
//! two-core machine would measure each other. Figures for RELIABILITY.md: `--nocapture` prints
//! one line per test.

// Every test holds the guard of `honest::exclusive` (a std mutex) across its awaits on purpose:
// it serializes whole tests, each on a runtime of its own thread.
#![allow(clippy::await_holding_lock)]

mod blocks;
#[path = "../common/mod.rs"]
mod common;
mod groups;
mod heap;
mod honest;
mod hook;
mod http_api;
mod login;
mod media;
mod reads;
