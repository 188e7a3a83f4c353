//! What checkpoints did, for `runnel_catalog.checkpoints` and the log.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Records kept.
const HISTORY: usize = 100;

/// One checkpoint attempt, for the system table.
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    pub epoch: u64,
    /// `complete`, `failed: <why>` or `abandoned: <why>`.
    pub state: String,
    pub started: SystemTime,
    pub duration: Duration,
    pub bytes: u64,
    pub files: u64,
    pub owners: u64,
}

/// What the system table and the log read.
#[derive(Debug, Default)]
pub struct CheckpointHistory {
    records: Mutex<VecDeque<CheckpointRecord>>,
    /// What the last start restored: epoch, bytes, time taken.
    pub restored: Mutex<Option<(u64, u64, Duration)>>,
}

impl CheckpointHistory {
    pub fn records(&self) -> Vec<CheckpointRecord> {
        self.records
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn push(&self, record: CheckpointRecord) {
        if let Ok(mut r) = self.records.lock() {
            if r.len() == HISTORY {
                r.pop_front();
            }
            r.push_back(record);
        }
    }
}
