//! The checkpoint coordinator: starts an epoch every `checkpoint_interval`
//! (and whenever FLUSH or a clean stop asks), injects its barrier into every
//! dataflow that reads a source, collects what every dataflow and sink
//! reports at that barrier, and writes the checkpoint (state/store.rs),
//! switching `CURRENT` last. Sinks commit their files once they see the
//! epoch completed (two-phase).
//!
//! One epoch is in flight at a time. An owner that has ended contributes
//! its final state to every later checkpoint; one that failed takes no part
//! (it is rebuilt from its definition at the next start). An epoch that
//! cannot be written (disk full, permissions) or does not complete in time
//! is abandoned, shown in `runnel_catalog.checkpoints`, and the next one is
//! tried at the next interval; nothing else stops.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::state::{
    CheckpointHistory, CheckpointLink, CheckpointRecord, CheckpointStore, Owner, Parts, Report,
    Restored,
};

/// Checkpoints kept on disk (the current one and the one before).
const KEEP: usize = 2;

#[derive(Debug)]
enum Status {
    Live,
    Finished(Parts),
    Failed,
}

/// Asks every running dataflow for the barrier of an epoch.
pub type BarrierRequester = Box<dyn Fn(u64) + Send + Sync>;

/// The coordinator's handle, owned by the database.
pub struct Checkpoints {
    registry: Arc<Mutex<HashMap<Owner, Status>>>,
    reports: mpsc::UnboundedSender<Report>,
    triggers: mpsc::UnboundedSender<oneshot::Sender<Result<u64>>>,
    completed: watch::Receiver<u64>,
    /// The last complete checkpoint's state, handed out once per owner.
    restored: Mutex<BTreeMap<Owner, Parts>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Opened by [`Checkpoints::run`], after the catalog is rebuilt.
    started: watch::Sender<bool>,
}

impl Checkpoints {
    /// Starts the coordinator. `restored` is the checkpoint the database
    /// started from; epochs continue after it.
    pub fn start(
        store: CheckpointStore,
        restored: Option<Restored>,
        interval: Duration,
        history: Arc<CheckpointHistory>,
    ) -> (Self, CoordinatorStart) {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (triggers_tx, triggers_rx) = mpsc::unbounded_channel();
        let last = restored.as_ref().map_or(0, |r| r.epoch);
        let (completed_tx, completed) = watch::channel(last);
        let registry = Arc::new(Mutex::new(HashMap::new()));
        let checkpoints = Checkpoints {
            registry: registry.clone(),
            reports: reports_tx,
            triggers: triggers_tx,
            completed,
            restored: Mutex::new(restored.map(|r| r.owners).unwrap_or_default()),
            task: Mutex::new(None),
            started: watch::channel(false).0,
        };
        let start = CoordinatorStart(Coordinator {
            store,
            registry,
            reports: reports_rx,
            triggers: triggers_rx,
            completed: completed_tx,
            history,
            interval,
            next_epoch: last + 1,
            waiting: Vec::new(),
            flight: None,
        });
        (checkpoints, start)
    }

    /// Runs the coordinator once the database can answer barrier requests.
    pub fn run(&self, start: CoordinatorStart, requester: BarrierRequester) {
        self.started.send_replace(true);
        let handle = tokio::spawn(start.0.run(requester));
        if let Ok(mut t) = self.task.lock() {
            *t = Some(handle);
        }
    }

    /// Registers `owner` as running and hands it its restored state.
    pub fn link(&self, owner: Owner) -> CheckpointLink {
        if let Ok(mut r) = self.registry.lock() {
            r.insert(owner.clone(), Status::Live);
        }
        let restore = self.restored.lock().ok().and_then(|mut r| r.remove(&owner));
        CheckpointLink::new(
            owner,
            self.reports.clone(),
            restore,
            self.started.subscribe(),
        )
    }

    /// A dropped object takes no further part.
    pub fn forget(&self, owner: &str) {
        if let Ok(mut r) = self.registry.lock() {
            r.remove(owner);
        }
    }

    /// Takes a checkpoint now (after the one in flight, if any) and waits
    /// until it is complete; returns its epoch.
    pub async fn checkpoint_now(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.triggers
            .send(tx)
            .map_err(|_| Error::Canceled("the checkpoint coordinator has stopped"))?;
        rx.await
            .map_err(|_| Error::Canceled("the checkpoint coordinator has stopped"))?
    }

    /// The last complete epoch, watched by sinks to commit.
    pub fn completed(&self) -> watch::Receiver<u64> {
        self.completed.clone()
    }

    pub fn stop(&self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(h) = t.take()
        {
            h.abort();
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The coordinator before it runs.
pub struct CoordinatorStart(Coordinator);

/// The epoch being collected.
struct Flight {
    epoch: u64,
    started: Instant,
    started_at: SystemTime,
    expected: BTreeSet<Owner>,
    reports: BTreeMap<Owner, Parts>,
    waiters: Vec<oneshot::Sender<Result<u64>>>,
}

struct Coordinator {
    store: CheckpointStore,
    registry: Arc<Mutex<HashMap<Owner, Status>>>,
    reports: mpsc::UnboundedReceiver<Report>,
    triggers: mpsc::UnboundedReceiver<oneshot::Sender<Result<u64>>>,
    completed: watch::Sender<u64>,
    history: Arc<CheckpointHistory>,
    interval: Duration,
    next_epoch: u64,
    /// FLUSH and shutdown waiting for the next epoch to start.
    waiting: Vec<oneshot::Sender<Result<u64>>>,
    flight: Option<Flight>,
}

impl Coordinator {
    async fn run(mut self, requester: BarrierRequester) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // Long enough for a backpressured dataflow to pass its barrier.
        let deadline = (self.interval * 10).max(Duration::from_secs(60));
        loop {
            let overdue = self.flight.as_ref().map(|f| f.started + deadline);
            tokio::select! {
                _ = tick.tick() => {
                    if self.flight.is_none() {
                        self.begin(&requester);
                    }
                }
                _ = sleep_until(overdue), if overdue.is_some() => {
                    if let Some(f) = &self.flight {
                        let missing: Vec<&Owner> =
                            f.expected.iter().filter(|o| !f.reports.contains_key(*o)).collect();
                        let why = format!("abandoned: no barrier from {missing:?} within {deadline:?}");
                        self.fail(why);
                    }
                    if !self.waiting.is_empty() {
                        self.begin(&requester);
                    }
                }
                trigger = self.triggers.recv() => {
                    let Some(tx) = trigger else { return };
                    self.waiting.push(tx);
                    if self.flight.is_none() {
                        self.begin(&requester);
                    }
                }
                report = self.reports.recv() => {
                    let Some(report) = report else { return };
                    self.apply(report);
                }
            }
            if self.is_complete() {
                self.finish().await;
                if !self.waiting.is_empty() {
                    self.begin(&requester);
                }
            }
        }
    }

    fn begin(&mut self, requester: &BarrierRequester) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let expected = self
            .registry
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, s)| matches!(s, Status::Live))
                    .map(|(o, _)| o.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.flight = Some(Flight {
            epoch,
            started: Instant::now(),
            started_at: SystemTime::now(),
            expected,
            reports: BTreeMap::new(),
            waiters: std::mem::take(&mut self.waiting),
        });
        requester(epoch);
    }

    fn apply(&mut self, report: Report) {
        let Ok(mut registry) = self.registry.lock() else {
            return;
        };
        match report {
            Report::Epoch {
                owner,
                epoch,
                parts,
            } => {
                if let Some(f) = &mut self.flight
                    && f.epoch == epoch
                    && f.expected.contains(&owner)
                {
                    f.reports.insert(owner, parts);
                }
            }
            Report::Final {
                owner,
                parts,
                applied,
            } => {
                if let Some(s) = registry.get_mut(&owner) {
                    *s = Status::Finished(parts);
                }
                if let Some(tx) = applied {
                    let _ = tx.send(());
                }
            }
            Report::Failed { owner } => {
                if let Some(s) = registry.get_mut(&owner) {
                    *s = Status::Failed;
                }
            }
        }
    }

    fn is_complete(&self) -> bool {
        let Some(f) = &self.flight else { return false };
        let Ok(registry) = self.registry.lock() else {
            return false;
        };
        f.expected
            .iter()
            .all(|o| f.reports.contains_key(o) || !matches!(registry.get(o), Some(Status::Live)))
    }

    /// Writes the complete epoch and makes it current.
    async fn finish(&mut self) {
        let Some(mut f) = self.flight.take() else {
            return;
        };
        let mut owners: BTreeMap<Owner, Parts> = BTreeMap::new();
        if let Ok(registry) = self.registry.lock() {
            for (owner, status) in registry.iter() {
                match status {
                    Status::Finished(parts) => {
                        owners.insert(owner.clone(), parts.clone());
                    }
                    Status::Live => {
                        if let Some(parts) = f.reports.remove(owner) {
                            owners.insert(owner.clone(), parts);
                        }
                    }
                    Status::Failed => {}
                }
            }
        }
        let store = self.store.clone();
        let epoch = f.epoch;
        let written = tokio::task::spawn_blocking(move || {
            let manifest = store.write(epoch, &owners)?;
            if let Err(e) = store.clean(KEEP) {
                tracing::warn!("old checkpoints could not be removed: {e}");
            }
            Ok::<_, Error>((manifest, owners.len()))
        })
        .await
        .unwrap_or_else(|e| Err(crate::internal!("the checkpoint writer stopped: {e}")));
        match written {
            Ok((manifest, owners)) => {
                tracing::debug!(epoch, bytes = manifest.bytes(), "checkpoint complete");
                self.history.push(CheckpointRecord {
                    epoch,
                    state: "complete".into(),
                    started: f.started_at,
                    duration: f.started.elapsed(),
                    bytes: manifest.bytes(),
                    files: manifest.files(),
                    owners: owners as u64,
                });
                self.completed.send_replace(epoch);
                for w in f.waiters {
                    let _ = w.send(Ok(epoch));
                }
            }
            Err(e) => {
                self.flight = Some(f);
                self.fail(format!("failed: {e}"));
            }
        }
    }

    /// Gives up the epoch in flight; the next interval tries again.
    fn fail(&mut self, why: String) {
        let Some(f) = self.flight.take() else { return };
        tracing::error!(
            epoch = f.epoch,
            "checkpoint not taken, retrying at the next interval: {why}"
        );
        self.history.push(CheckpointRecord {
            epoch: f.epoch,
            state: why.clone(),
            started: f.started_at,
            duration: f.started.elapsed(),
            bytes: 0,
            files: 0,
            owners: f.expected.len() as u64,
        });
        for w in f.waiters {
            let _ = w.send(Err(Error::io(
                format!("checkpoint {} was not taken", f.epoch),
                std::io::Error::other(why.clone()),
            )));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
