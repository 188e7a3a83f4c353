//! Checkpoints: what a consistent cut of every running dataflow and sink
//! looks like on disk, and how it comes back.
//!
//! - [`encode`]: operator state and view rows as Arrow IPC parts.
//! - [`store`]: the checkpoint directories, their manifest (every file with
//!   its length and CRC32) and the `CURRENT` pointer switched last.
//! - [`fault`]: named points where tests make a checkpoint crash or fail.
//!
//! The coordinator that starts epochs and collects reports lives with the
//! database (`database/checkpoint.rs`); the barriers that cut the streams
//! are the runtime's (`stream/`). Nothing here spawns tasks.

pub mod encode;
pub mod fault;
mod history;
pub mod store;
mod system;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

pub use encode::{decode_parts, encode_parts};
pub use history::{CheckpointHistory, CheckpointRecord};
pub use store::{CheckpointStore, Manifest, Restored};
pub use system::{checkpoints_rows, checkpoints_schema};

/// Who reports state: a view's dataflow, a sink's private query, a sink.
/// Named by the catalog id, which a dropped and re-created object does not
/// reuse, so state never reaches the wrong object.
pub type Owner = String;

/// The owner name of an object's dataflow.
pub fn dataflow_owner(id: u64) -> Owner {
    format!("{id}.dataflow")
}

/// The owner name of a sink's writer.
pub fn sink_owner(id: u64) -> Owner {
    format!("{id}.sink")
}

/// Named blobs one owner contributes to a checkpoint.
pub type Parts = BTreeMap<String, Vec<u8>>;

/// What an owner tells the coordinator.
#[derive(Debug)]
pub enum Report {
    /// The owner's state at the barrier of `epoch`.
    Epoch {
        owner: Owner,
        epoch: u64,
        parts: Parts,
    },
    /// The owner's input has ended: this state holds for every later epoch.
    /// `applied` is answered once the coordinator has it (every epoch
    /// completed after that includes it).
    Final {
        owner: Owner,
        parts: Parts,
        applied: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// The owner has failed; it takes no part in checkpoints any more.
    Failed { owner: Owner },
}

/// How a dataflow or sink reaches the coordinator, and what it restores.
#[derive(Clone)]
pub struct CheckpointLink {
    pub owner: Owner,
    reports: mpsc::UnboundedSender<Report>,
    /// The state of the last complete checkpoint, taken once at start.
    restore: Arc<Mutex<Option<Parts>>>,
    /// Opens once every object of the catalog is rebuilt: until then no
    /// source is read, so a restored view's new rows cannot slip past a
    /// downstream view that has not attached yet.
    started: tokio::sync::watch::Receiver<bool>,
}

impl CheckpointLink {
    pub fn new(
        owner: Owner,
        reports: mpsc::UnboundedSender<Report>,
        restore: Option<Parts>,
        started: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        CheckpointLink {
            owner,
            reports,
            restore: Arc::new(Mutex::new(restore)),
            started,
        }
    }

    /// A link that reports nowhere (tests, one-off queries).
    pub fn detached(owner: impl Into<Owner>) -> Self {
        let (reports, _) = mpsc::unbounded_channel();
        let (_, started) = tokio::sync::watch::channel(true);
        CheckpointLink::new(owner.into(), reports, None, started)
    }

    /// Waits until the database has rebuilt every object.
    pub async fn wait_started(&self) {
        let mut started = self.started.clone();
        let _ = started.wait_for(|s| *s).await;
    }

    /// The state to restore, if the last checkpoint has one (once).
    pub fn take_restore(&self) -> Option<Parts> {
        self.restore.lock().ok().and_then(|mut r| r.take())
    }

    pub fn report_epoch(&self, epoch: u64, parts: Parts) {
        let _ = self.reports.send(Report::Epoch {
            owner: self.owner.clone(),
            epoch,
            parts,
        });
    }

    pub fn report_final(&self, parts: Parts) {
        let _ = self.reports.send(Report::Final {
            owner: self.owner.clone(),
            parts,
            applied: None,
        });
    }

    /// Like [`CheckpointLink::report_final`]; the receiver resolves once
    /// the coordinator holds the state (an error: it has stopped).
    pub fn report_final_acked(&self, parts: Parts) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.reports.send(Report::Final {
            owner: self.owner.clone(),
            parts,
            applied: Some(tx),
        });
        rx
    }

    pub fn report_failed(&self) {
        let _ = self.reports.send(Report::Failed {
            owner: self.owner.clone(),
        });
    }
}
