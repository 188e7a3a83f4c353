//! The text of a split's resume position: `key=value` fields joined by
//! `;` (`offset=42`, `offset=1200;dev=2049;ino=77`). A checkpoint stores it
//! without looking inside; only the connector that wrote it reads it back.
//!
//! Text rather than a number because some positions need more than one:
//! a file is known by its identity as well as an offset, and a generator
//! carries its seed and random-stream positions so that it continues with
//! the very rows it would have made.

use std::fmt::Display;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Builds a position's text.
#[derive(Debug, Default)]
pub(super) struct PositionText(String);

impl PositionText {
    pub fn new() -> Self {
        PositionText::default()
    }

    /// Adds a field; values must not contain `;` or `=`.
    pub fn with(mut self, key: &str, value: impl Display) -> Self {
        if !self.0.is_empty() {
            self.0.push(';');
        }
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&value.to_string());
        self
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// A position read back: its fields, and what to name in an error.
#[derive(Debug)]
pub(super) struct ParsedPosition<'a> {
    split: &'a str,
    text: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> ParsedPosition<'a> {
    pub fn parse(split: &'a str, text: &'a str) -> Result<Self> {
        let mut fields = Vec::new();
        for field in text.split(';').filter(|f| !f.is_empty()) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(corrupt(split, text, "a field without '='"));
            };
            fields.push((key, value));
        }
        Ok(ParsedPosition {
            split,
            text,
            fields,
        })
    }

    /// The raw text of field `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Field `key`, which must be present.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T> {
        self.optional(key)?
            .ok_or_else(|| corrupt(self.split, self.text, &format!("no field \"{key}\"")))
    }

    /// Field `key`, if present.
    pub fn optional<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                corrupt(
                    self.split,
                    self.text,
                    &format!("field \"{key}\" is \"{v}\""),
                )
            }),
        }
    }

    /// An error about this position.
    pub fn error(&self, why: &str) -> Error {
        corrupt(self.split, self.text, why)
    }
}

fn corrupt(split: &str, text: &str, why: &str) -> Error {
    Error::Data {
        sqlstate: "XX001",
        message: format!(
            "the recorded position of split \"{split}\" (\"{text}\") cannot be resumed: {why}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_what_was_written() {
        let text = PositionText::new()
            .with("offset", 1200u64)
            .with("dev", 7)
            .finish();
        assert_eq!(text, "offset=1200;dev=7");
        let p = ParsedPosition::parse("a.log", &text).unwrap();
        assert_eq!(p.get::<u64>("offset").unwrap(), 1200);
        assert_eq!(p.optional::<u64>("ino").unwrap(), None);
        let e = p.get::<u64>("ino").unwrap_err();
        assert_eq!(e.sqlstate(), "XX001");
        assert!(e.to_string().contains("a.log"), "{e}");
        assert!(ParsedPosition::parse("x", "offset").is_err());
        let bad = ParsedPosition::parse("x", "offset=ten").unwrap();
        assert!(bad.get::<u64>("offset").is_err());
    }
}
