//! Named fault points, for tests that crash or fail a checkpoint where a
//! real disk or a real `kill -9` cannot be aimed.
//!
//! `RUNNEL_FAULTS=point=action[,point=action]` with action `crash` (abort
//! the process, as `kill -9` would) or `error` (the write fails once, like
//! a full disk), or `error*N` (fails N times); `@K` after the action lets
//! the point pass K-1 times first (`crash@2`: crash at the second time). Points: `after_state_write`,
//! `before_manifest_switch`, `during_sink_commit`. Unset (always in
//! production), every check is one relaxed load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;

use crate::error::{Error, Result};

enum Kind {
    Crash,
    Error(u32),
}

struct Action {
    kind: Kind,
    /// Passes left before the action applies.
    skip: u32,
}

fn faults() -> &'static Mutex<HashMap<String, Action>> {
    static FAULTS: OnceLock<Mutex<HashMap<String, Action>>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let mut map = HashMap::new();
        if let Ok(spec) = std::env::var("RUNNEL_FAULTS") {
            for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
                let (point, action) = item.split_once('=').unwrap_or((item, "crash"));
                let (action, at) = action.split_once('@').unwrap_or((action, "1"));
                let kind = match action.trim() {
                    "crash" => Kind::Crash,
                    a => match a.strip_prefix("error") {
                        Some(n) => Kind::Error(n.trim_start_matches('*').parse().unwrap_or(1)),
                        None => continue,
                    },
                };
                let skip = at.trim().parse::<u32>().unwrap_or(1).saturating_sub(1);
                let action = Action { kind, skip };
                map.insert(point.trim().to_string(), action);
            }
        }
        Mutex::new(map)
    })
}

/// Passes, crashes the process, or fails, as `RUNNEL_FAULTS` says for
/// `point`.
pub fn check(point: &str) -> Result<()> {
    let Ok(mut map) = faults().lock() else {
        return Ok(());
    };
    let Some(action) = map.get_mut(point) else {
        return Ok(());
    };
    if action.skip > 0 {
        action.skip -= 1;
        return Ok(());
    }
    match &mut action.kind {
        Kind::Crash => {
            tracing::error!("fault injected at {point}: crashing");
            std::process::abort();
        }
        Kind::Error(n) => {
            if *n == 0 {
                return Ok(());
            }
            *n -= 1;
            Err(Error::io(
                format!("fault injected at {point}"),
                std::io::Error::other("injected failure"),
            ))
        }
    }
}
