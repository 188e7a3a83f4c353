//! [`Options`]: the WITH options of a CREATE SOURCE, taken one by one by the
//! parts that understand them, so that whatever is left over is a mistake
//! the user hears about (never silently ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};

/// Options not yet taken, and the names of those that were.
#[derive(Debug, Clone)]
pub struct Options {
    remaining: BTreeMap<String, String>,
    known: BTreeSet<&'static str>,
    /// Names the user wrote, for messages.
    connector: String,
}

impl Options {
    pub fn new(connector: &str, options: BTreeMap<String, String>) -> Self {
        Options {
            remaining: options,
            known: BTreeSet::new(),
            connector: connector.to_string(),
        }
    }

    /// Takes option `key` (or one of its `aliases`).
    pub fn take(&mut self, key: &'static str, aliases: &[&'static str]) -> Option<String> {
        self.known.insert(key);
        let mut found = self.remaining.remove(key);
        for alias in aliases {
            if let Some(v) = self.remaining.remove(*alias) {
                found.get_or_insert(v);
            }
        }
        found
    }

    pub fn required(&mut self, key: &'static str, aliases: &[&'static str]) -> Result<String> {
        self.take(key, aliases).ok_or_else(|| {
            invalid(format!(
                "connector '{}' needs the option {key}",
                self.connector
            ))
        })
    }

    pub fn bool(
        &mut self,
        key: &'static str,
        aliases: &[&'static str],
        default: bool,
    ) -> Result<bool> {
        match self.take(key, aliases) {
            None => Ok(default),
            Some(v) => parse_bool(&v)
                .ok_or_else(|| invalid(format!("option {key} must be true or false, not '{v}'"))),
        }
    }

    /// An integer option within `min..=max`.
    pub fn int(
        &mut self,
        key: &'static str,
        aliases: &[&'static str],
        min: i64,
        max: i64,
    ) -> Result<Option<i64>> {
        let Some(v) = self.take(key, aliases) else {
            return Ok(None);
        };
        match v.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(format!(
                "option {key} must be an integer from {min} to {max}, not '{v}'"
            ))),
        }
    }

    pub fn float(&mut self, key: &'static str, aliases: &[&'static str]) -> Result<Option<f64>> {
        let Some(v) = self.take(key, aliases) else {
            return Ok(None);
        };
        match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(invalid(format!("option {key} must be a number, not '{v}'"))),
        }
    }

    pub fn duration(
        &mut self,
        key: &'static str,
        aliases: &[&'static str],
    ) -> Result<Option<Duration>> {
        let Some(v) = self.take(key, aliases) else {
            return Ok(None);
        };
        parse_duration(&v).map(Some).ok_or_else(|| {
            invalid(format!(
                "option {key} must be a duration such as '500ms', '5s' or '1 minute', not '{v}'"
            ))
        })
    }

    /// Options whose names start with `prefix`, taken all at once.
    pub fn take_prefixed(&mut self, prefix: &'static str) -> BTreeMap<String, String> {
        self.known.insert(prefix);
        let keys: Vec<String> = self
            .remaining
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.remaining.remove_entry(&k))
            .collect()
    }

    /// Fails on any option nobody took, naming the valid ones.
    pub fn finish(self) -> Result<()> {
        if let Some(key) = self.remaining.keys().next() {
            let valid: Vec<&str> = self.known.iter().copied().collect();
            return Err(invalid(format!(
                "unknown option \"{key}\" for connector '{}'; valid options are: {}",
                self.connector,
                valid.join(", ")
            )));
        }
        Ok(())
    }
}

/// 22023: a parameter value (option) that is not acceptable.
pub fn invalid(message: String) -> Error {
    Error::Plan {
        sqlstate: "22023",
        message,
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" | "t" => Some(true),
        "false" | "off" | "no" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// '500ms', '5s', '5 seconds', '1 minute', '2h', or a bare number of seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => number,
        "ms" | "millisecond" | "milliseconds" => number / 1000.0,
        "us" | "microsecond" | "microseconds" => number / 1_000_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        "d" | "day" | "days" => number * 86400.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_options_are_errors_that_list_the_valid_ones() {
        let mut o = Options::new(
            "file",
            [
                ("path".to_string(), "/x".to_string()),
                ("folow".to_string(), "true".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(o.required("path", &[]).unwrap(), "/x");
        assert!(!o.bool("follow", &[], false).unwrap());
        let err = o.finish().unwrap_err().to_string();
        assert!(
            err.contains("\"folow\"") && err.contains("follow, path"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1 minute"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
    }
}
