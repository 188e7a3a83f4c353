//! Session settings: the PostgreSQL run-time parameters clients read and
//! write with SET / SHOW / RESET / current_setting(), plus DataFusion's own
//! `datafusion.*` options.
//!
//! Parameters that only describe the server (server_version, encoding) are
//! read-only. Parameters PostgreSQL reports through ParameterStatus are
//! flagged so the server can tell the client when they change.

use std::collections::BTreeMap;

use crate::error::{CatalogErrorKind, Error, Result};

/// The PostgreSQL version runnel speaks, as clients parse it.
pub const PG_VERSION: &str = "16.6";
pub const PG_VERSION_NUM: &str = "160006";

/// What `SELECT version()` answers.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (runnel {}) on {}-linux, PostgreSQL-compatible streaming database, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// What the server reports as `server_version` on connect.
pub fn server_version() -> String {
    format!("{PG_VERSION} (runnel {})", env!("CARGO_PKG_VERSION"))
}

struct Parameter {
    name: &'static str,
    default: &'static str,
    /// Sent in ParameterStatus at startup and whenever it changes.
    reported: bool,
    read_only: bool,
    description: &'static str,
}

const fn p(
    name: &'static str,
    default: &'static str,
    reported: bool,
    read_only: bool,
    description: &'static str,
) -> Parameter {
    Parameter {
        name,
        default,
        reported,
        read_only,
        description,
    }
}

/// Every PostgreSQL parameter runnel knows. Names are lower case; lookups
/// fold case as PostgreSQL does.
const PARAMETERS: &[Parameter] = &[
    p(
        "application_name",
        "",
        true,
        false,
        "Sets the application name reported in statistics and logs.",
    ),
    p(
        "bytea_output",
        "hex",
        false,
        false,
        "Sets the output format for bytea.",
    ),
    p(
        "client_encoding",
        "UTF8",
        true,
        false,
        "Sets the client's character set encoding (only UTF8).",
    ),
    p(
        "client_min_messages",
        "notice",
        false,
        false,
        "Sets the message levels sent to the client.",
    ),
    p(
        "datestyle",
        "ISO, MDY",
        true,
        false,
        "Sets the display format for date and time values.",
    ),
    p(
        "default_transaction_isolation",
        "read committed",
        false,
        false,
        "Accepted; every statement commits on its own.",
    ),
    p(
        "default_transaction_read_only",
        "off",
        true,
        false,
        "Accepted; has no effect.",
    ),
    p(
        "extra_float_digits",
        "1",
        false,
        false,
        "Accepted; floats are always sent with full precision.",
    ),
    p(
        "idle_in_transaction_session_timeout",
        "0",
        false,
        false,
        "Accepted; has no effect.",
    ),
    p(
        "in_hot_standby",
        "off",
        true,
        true,
        "Whether the server is a standby.",
    ),
    p(
        "integer_datetimes",
        "on",
        true,
        true,
        "Datetimes are integer based.",
    ),
    p(
        "intervalstyle",
        "postgres",
        true,
        false,
        "Sets the display format for interval values.",
    ),
    p(
        "is_superuser",
        "on",
        true,
        true,
        "Whether the current user is a superuser.",
    ),
    p("lc_collate", "C", false, true, "Collation order locale."),
    p(
        "lc_ctype",
        "C",
        false,
        true,
        "Character classification locale.",
    ),
    p("lc_messages", "C", false, false, "Language of messages."),
    p(
        "lc_monetary",
        "C",
        false,
        false,
        "Locale for formatting monetary amounts.",
    ),
    p(
        "lc_numeric",
        "C",
        false,
        false,
        "Locale for formatting numbers.",
    ),
    p(
        "lc_time",
        "C",
        false,
        false,
        "Locale for formatting dates and times.",
    ),
    p(
        "lock_timeout",
        "0",
        false,
        false,
        "Accepted; runnel takes no row locks.",
    ),
    p(
        "max_identifier_length",
        "63",
        false,
        true,
        "Maximum identifier length.",
    ),
    p(
        "search_path",
        "\"$user\", public",
        true,
        false,
        "Schema search order; user objects live in public.",
    ),
    p(
        "server_encoding",
        "UTF8",
        true,
        true,
        "Server character set encoding.",
    ),
    p(
        "server_version",
        PG_VERSION,
        true,
        true,
        "PostgreSQL version runnel is compatible with.",
    ),
    p(
        "server_version_num",
        PG_VERSION_NUM,
        false,
        true,
        "PostgreSQL version number runnel is compatible with.",
    ),
    p(
        "session_authorization",
        "runnel",
        true,
        true,
        "The session user name.",
    ),
    p(
        "standard_conforming_strings",
        "on",
        true,
        true,
        "Backslashes in ordinary string literals are literal.",
    ),
    p(
        "statement_timeout",
        "0",
        false,
        false,
        "Cancels statements running longer than this many milliseconds (0: never).",
    ),
    p(
        "timezone",
        "UTC",
        true,
        false,
        "Time zone for displaying and interpreting time stamps.",
    ),
    p(
        "transaction_isolation",
        "read committed",
        false,
        true,
        "Every statement commits on its own.",
    ),
    p(
        "transaction_read_only",
        "off",
        false,
        true,
        "Whether the current transaction is read-only.",
    ),
    p(
        "transaction isolation level",
        "read committed",
        false,
        true,
        "Every statement commits on its own.",
    ),
    p(
        "work_mem",
        "4MB",
        false,
        false,
        "Accepted; memory is managed by the engine.",
    ),
];

/// The canonical spelling PostgreSQL uses in ParameterStatus and SHOW ALL.
fn display_name(name: &str) -> &str {
    match name {
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "timezone" => "TimeZone",
        other => other,
    }
}

fn lookup(name: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.name == name)
}

fn normalize(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "time zone" => "timezone".to_string(),
        "names" => "client_encoding".to_string(),
        _ => name,
    }
}

/// One session's parameter values.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Values set in this session; everything else has its default.
    values: BTreeMap<String, String>,
    /// Custom `prefix.name` parameters (PostgreSQL placeholder variables).
    custom: BTreeMap<String, String>,
    user: String,
}

/// What a SET changed, for the ParameterStatus message.
pub type Reported = Option<(String, String)>;

impl Settings {
    pub fn new(user: &str) -> Self {
        Settings {
            user: user.to_string(),
            ..Default::default()
        }
    }

    /// The current value of `name`, or `None` when unknown.
    pub fn get(&self, name: &str) -> Option<String> {
        let name = normalize(name);
        if name == "session_authorization" {
            return Some(self.user.clone());
        }
        if let Some(v) = self.values.get(&name) {
            return Some(v.clone());
        }
        if let Some(p) = lookup(&name) {
            return Some(p.default.to_string());
        }
        self.custom.get(&name).cloned()
    }

    /// Sets `name`; returns the ParameterStatus to send when it is reported.
    pub fn set(&mut self, name: &str, value: &str) -> Result<Reported> {
        let name = normalize(name);
        if name == "transaction" {
            return Ok(None);
        }
        match lookup(&name) {
            Some(p) if p.read_only => {
                if value.eq_ignore_ascii_case(&self.get(&name).unwrap_or_default()) {
                    return Ok(None);
                }
                Err(Error::Plan {
                    sqlstate: "55P02",
                    message: format!("parameter \"{name}\" cannot be changed"),
                })
            }
            Some(p) => {
                let value = canonical_value(&name, value)?;
                self.values.insert(name.clone(), value.clone());
                Ok(p.reported.then(|| (display_name(&name).to_string(), value)))
            }
            None if name.contains('.') => {
                self.custom.insert(name, value.to_string());
                Ok(None)
            }
            None => Err(unrecognized(&name)),
        }
    }

    /// Restores the default of `name` (all parameters for `None`).
    pub fn reset(&mut self, name: Option<&str>) -> Result<Vec<(String, String)>> {
        let names: Vec<String> = match name {
            Some(n) => {
                let n = normalize(n);
                if lookup(&n).is_none() && !self.custom.contains_key(&n) && !n.contains('.') {
                    return Err(unrecognized(&n));
                }
                vec![n]
            }
            None => self.values.keys().cloned().collect(),
        };
        let mut reported = Vec::new();
        for n in names {
            self.custom.remove(&n);
            if self.values.remove(&n).is_some()
                && let Some(p) = lookup(&n)
                && p.reported
            {
                reported.push((display_name(&n).to_string(), p.default.to_string()));
            }
        }
        Ok(reported)
    }

    /// (name, value, description) of every known parameter, for SHOW ALL.
    pub fn all(&self) -> Vec<(String, String, String)> {
        PARAMETERS
            .iter()
            .filter(|p| !p.name.contains(' '))
            .map(|p| {
                (
                    display_name(p.name).to_string(),
                    self.get(p.name).unwrap_or_default(),
                    p.description.to_string(),
                )
            })
            .collect()
    }

    /// Parameters sent in ParameterStatus right after authentication.
    pub fn startup_parameters(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = PARAMETERS
            .iter()
            .filter(|p| p.reported)
            .map(|p| {
                let value = if p.name == "server_version" {
                    server_version()
                } else {
                    self.get(p.name).unwrap_or_default()
                };
                (display_name(p.name).to_string(), value)
            })
            .collect();
        out.sort();
        out
    }
}

fn unrecognized(name: &str) -> Error {
    Error::catalog(
        CatalogErrorKind::UndefinedObject,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// Validates values whose meaning runnel depends on.
fn canonical_value(name: &str, value: &str) -> Result<String> {
    match name {
        "client_encoding" => {
            let v = value.to_ascii_uppercase().replace('-', "");
            if v == "UTF8" || v == "UNICODE" {
                Ok("UTF8".to_string())
            } else {
                Err(Error::Unsupported(format!(
                    "client encoding \"{value}\" is not supported; runnel speaks UTF8 only"
                )))
            }
        }
        "statement_timeout" => {
            parse_duration_ms(value)?;
            Ok(value.to_string())
        }
        "timezone"
            if value.eq_ignore_ascii_case("utc") || value.eq_ignore_ascii_case("etc/utc") =>
        {
            Ok("UTC".to_string())
        }
        _ => Ok(value.to_string()),
    }
}

/// Parses a PostgreSQL duration setting ("5000", "5s", "250ms", "1min").
pub fn parse_duration_ms(value: &str) -> Result<u64> {
    let v = value.trim().to_ascii_lowercase();
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = v[digits.len()..].trim();
    let n: u64 = digits.parse().map_err(|_| {
        Error::data(
            "22023",
            format!("invalid value for a duration: \"{value}\""),
        )
    })?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(Error::data(
                "22023",
                format!("invalid unit in duration \"{value}\""),
            ));
        }
    };
    Ok(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset_round_trip() {
        let mut s = Settings::new("runnel");
        assert_eq!(s.get("TimeZone").as_deref(), Some("UTC"));
        let reported = s.set("application_name", "psql").unwrap();
        assert_eq!(reported, Some(("application_name".into(), "psql".into())));
        assert_eq!(s.get("application_name").as_deref(), Some("psql"));
        s.reset(None).unwrap();
        assert_eq!(s.get("application_name").as_deref(), Some(""));
    }

    #[test]
    fn unknown_and_read_only_parameters_are_refused() {
        let mut s = Settings::new("runnel");
        assert_eq!(s.set("no_such_thing", "1").unwrap_err().sqlstate(), "42704");
        assert_eq!(
            s.set("server_version", "9").unwrap_err().sqlstate(),
            "55P02"
        );
        assert!(s.set("myapp.flag", "on").is_ok());
        assert_eq!(s.get("myapp.flag").as_deref(), Some("on"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("5s").unwrap(), 5000);
        assert_eq!(parse_duration_ms("250").unwrap(), 250);
        assert!(parse_duration_ms("abc").is_err());
    }
}
