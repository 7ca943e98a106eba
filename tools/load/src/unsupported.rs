//! [`Unsupported`]: the error a scenario returns when the server lacks what it needs.

/// The server lacks a feature the scenario needs (exit code 2).
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}
