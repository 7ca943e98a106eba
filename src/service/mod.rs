//! What each request means, whichever transport carried it: the socket sessions (`session`:
//! frames <-> these functions) and the HTTP API (`http`: JSON <-> these functions) call the same
//! typed functions, which check every id with one validator ([`ids`]) and answer with one error
//! type ([`Refusal`]), mapped to an ERROR frame or an HTTP status in one place each.
//!
//! Files, bottom-up: `refusal`, `ids`, `run` (where store work runs, and store errors to
//! refusals), then `messages`, `blocks`, `groups`, `reads`, `history`, `drain`, `users`;
//! `backup` (online backups and their restore) after `media`, whose file layout it copies.

pub mod backup;
pub mod blocks;
pub mod drain;
pub mod groups;
pub mod history;
pub mod ids;
pub mod media;
pub mod messages;
pub mod reads;
pub mod refusal;
pub mod run;
pub mod signals;
pub mod users;

pub use refusal::Refusal;
