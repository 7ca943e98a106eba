//! Moderation before a message is stored: the built-in word filter (`word_filter`, PROTOCOL.md
//! 15.8), then the before-send webhook (`send_hook_url`, 15.9). [`Words`] holds the list in
//! force; `server` reloads it when the file changes or on SIGHUP, and a list that does not
//! parse leaves the one in force in place.
//!
//! Files, bottom-up: `words` (the list: parsing, normalizing, matching), `hook` (the webhook's
//! client: the request, the answer, the failure mode).

pub mod hook;
pub mod words;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::metrics::Counter;
pub use words::{ListError, Verdict, WordList};

/// The word list in force, and what reloading it did.
pub struct Words {
    path: Option<PathBuf>,
    /// Content types the filter reads (as text).
    types: Vec<u32>,
    list: RwLock<Arc<WordList>>,
    /// The file's modification time and length when it was last read.
    seen: Mutex<Option<(SystemTime, u64)>>,
    pub rejected: Counter,
    pub masked: Counter,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

/// Reads and parses a word list file.
pub fn load(path: &Path) -> Result<WordList, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    WordList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Words {
    /// The filter of `path` (`None`: off) for messages of `types`, loaded now: a file that
    /// cannot be read or parsed is an error (the server does not start).
    pub fn open(path: Option<PathBuf>, types: Vec<u32>) -> Result<Words, String> {
        let words = Words {
            path,
            types,
            list: RwLock::new(Arc::new(WordList::empty())),
            seen: Mutex::new(None),
            rejected: Counter::default(),
            masked: Counter::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
        };
        if words.path.is_some() {
            words.reload(true)?;
        }
        Ok(words)
    }

    /// The list in force.
    pub fn list(&self) -> Arc<WordList> {
        self.list.read().clone()
    }

    /// The verdict on a message's content: only content types the filter reads, and only
    /// content that is UTF-8 text, are looked at; anything else passes.
    pub fn check(&self, content_type: u32, content: &[u8]) -> Verdict {
        if self.path.is_none() || !self.types.contains(&content_type) {
            return Verdict::Pass;
        }
        let Ok(text) = std::str::from_utf8(content) else {
            return Verdict::Pass;
        };
        let verdict = self.list().check(text);
        match verdict {
            Verdict::Reject => self.rejected.inc(),
            Verdict::Mask(_) => self.masked.inc(),
            Verdict::Pass => {}
        }
        verdict
    }

    /// Reads the file again if it changed since it was last read (or always, if `force`):
    /// `Ok(true)` if a new list is in force. A file that cannot be read or parsed leaves the
    /// list in force and is an error (counted).
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if !force && stamp.is_some() && *self.seen.lock() == stamp {
            return Ok(false);
        }
        *self.seen.lock() = stamp;
        match load(path) {
            Ok(list) => {
                tracing::info!(
                    "word filter {}: {} entries to reject, {} to mask",
                    path.display(),
                    list.rejects,
                    list.masks
                );
                *self.list.write() = Arc::new(list);
                self.reloads.inc();
                Ok(true)
            }
            Err(e) => {
                self.reload_failures.inc();
                Err(e)
            }
        }
    }

    /// Whether a file is configured.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }
}
