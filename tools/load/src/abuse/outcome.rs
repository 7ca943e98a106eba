//! [`Outcome`]: what an attack returns for its line and its JSON object.

use serde_json::{Map, Value};

/// What an attack reports besides the common figures: its own figures, the head of its line,
/// and whether it could be measured at all.
pub struct Outcome {
    pub figures: Map<String, Value>,
    pub headline: String,
    /// Something made the measurement incomplete (said in the line and the JSON).
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn new(headline: impl Into<String>) -> Outcome {
        Outcome {
            figures: Map::new(),
            headline: headline.into(),
            problems: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.figures.insert(key.into(), v.into());
    }
}
