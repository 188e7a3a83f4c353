//! The running sink: one task that reads its input's feed (a view's
//! snapshot and changes, or a private query's output), hands rows to the
//! [`ParquetSinkWriter`] and commits finished files in step with
//! checkpoints (two-phase, docs/design/0007 and 0008).
//!
//! Phase one: at a checkpoint barrier the open files are closed and every
//! finished, uncommitted file (its bytes) goes into the sink's state for
//! that epoch. Phase two: once the coordinator reports the epoch complete,
//! those files are committed (temporary name, fsync, rename). After a crash
//! the restored state's files are committed again — same names, same bytes,
//! so a file is never lost, never doubled — and rows after the checkpoint
//! are written again from the replayed input into new files.
//!
//! A commit that fails keeps its files and is retried with backoff; the
//! task stops reading its input meanwhile (backpressure).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::commit::commit_files;
use super::parquet::{FinishedFile, ParquetSinkWriter};
use super::{Progress, SinkStats};
use crate::error::{Error, Result};
use crate::operators::{Attachment, ViewEvent};
use crate::state::{CheckpointLink, Parts};

/// First wait after a failed commit; doubled per failure up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) struct SinkTask {
    pub name: String,
    pub root: std::path::PathBuf,
    pub writer: ParquetSinkWriter,
    pub stats: Arc<SinkStats>,
    pub progress: watch::Sender<Progress>,
    pub link: CheckpointLink,
    /// The last complete checkpoint epoch.
    pub completed: watch::Receiver<u64>,
    /// Finished files not yet committed, with the epoch whose state first
    /// named them (`None`: no barrier since they finished).
    pub pending: Vec<(Option<u64>, FinishedFile)>,
}

/// How the input stopped.
enum Stop {
    Ended,
    Failed(String),
}

/// The sink's part of a checkpoint: its uncommitted files (their bytes are
/// parts `file-<n>`).
#[derive(Serialize, Deserialize)]
struct SinkState {
    files: Vec<FileEntry>,
    #[serde(default)]
    ended: bool,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    dir: String,
    name: String,
    rows: u64,
}

impl SinkTask {
    pub(super) async fn run(mut self, attachment: Attachment) {
        let Attachment {
            snapshot,
            state,
            feed,
            ..
        } = attachment;
        let result = async {
            let restored = self.link.take_restore();
            match restored {
                Some(parts) => {
                    let ended = self.restore(parts)?;
                    self.commit_through(u64::MAX).await;
                    if ended {
                        // Everything was committed before the stop.
                        self.link.report_final(self.state_parts(true)?);
                        return Ok(Stop::Ended);
                    }
                }
                None => {
                    for batch in snapshot.iter() {
                        self.write(batch).await?;
                    }
                }
            }
            match state.as_str() {
                "running" => self.follow(feed).await,
                s => Ok(match s.strip_prefix("failed: ") {
                    Some(reason) => Stop::Failed(reason.to_string()),
                    None => Stop::Ended,
                }),
            }
        }
        .await;
        let outcome = match result {
            Ok(stop) => self.finish(stop).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(sink = %self.name, "sink failed: {e}");
            self.stats.set_state(format!("failed: {e}"));
            self.stats.set_error(&e.to_string());
            self.progress.send_modify(|p| p.failed = true);
            self.link.report_failed();
        }
    }

    /// Takes back the files of the checkpoint; returns whether the input
    /// had already ended then.
    fn restore(&mut self, parts: Parts) -> Result<bool> {
        let meta = parts
            .get("sink")
            .ok_or_else(|| crate::internal!("the checkpoint of sink {} has no state", self.name))?;
        let state: SinkState = serde_json::from_slice(meta)
            .map_err(|e| crate::internal!("the checkpoint of sink {}: {e}", self.name))?;
        for (i, f) in state.files.into_iter().enumerate() {
            let bytes = parts.get(&format!("file-{i}")).cloned().ok_or_else(|| {
                crate::internal!("the checkpoint of sink {} lacks file {i}", self.name)
            })?;
            self.pending.push((
                Some(0),
                FinishedFile {
                    dir: f.dir,
                    name: f.name,
                    bytes,
                    rows: f.rows,
                },
            ));
        }
        Ok(state.ended)
    }

    async fn follow(&mut self, mut feed: mpsc::Receiver<ViewEvent>) -> Result<Stop> {
        let mut completed = self.completed.clone();
        loop {
            let deadline = self.writer.next_deadline().map(Instant::from_std);
            let event = tokio::select! {
                event = feed.recv() => event,
                changed = completed.changed() => {
                    if changed.is_ok() {
                        let epoch = *completed.borrow_and_update();
                        self.commit_through(epoch).await;
                    }
                    continue;
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.writer.roll_expired(std::time::Instant::now())?;
                    self.take_ready();
                    continue;
                }
            };
            match event {
                Some(ViewEvent::Data(batch)) => self.write(&batch).await?,
                Some(ViewEvent::Watermark(w)) => self.stats.watermark.store(w, Ordering::Relaxed),
                Some(ViewEvent::Flush(ticket)) => {
                    // Everything before the ticket is in finished files;
                    // the next checkpoint commits them.
                    self.writer.roll_all()?;
                    self.take_ready();
                    self.progress
                        .send_modify(|p| p.flushed = p.flushed.max(ticket));
                }
                Some(ViewEvent::Checkpoint(epoch)) => {
                    self.writer.roll_all()?;
                    self.take_ready();
                    let parts = self.state_parts(false)?;
                    for (tag, _) in &mut self.pending {
                        tag.get_or_insert(epoch);
                    }
                    self.link.report_epoch(epoch, parts);
                }
                Some(ViewEvent::End) | None => return Ok(Stop::Ended),
                Some(ViewEvent::Failed(reason)) => return Ok(Stop::Failed(reason.to_string())),
            }
        }
    }

    /// The input will send nothing more: the last files go into the final
    /// state, and are committed once a checkpoint holds them.
    async fn finish(&mut self, stop: Stop) -> Result<()> {
        self.writer.roll_all()?;
        self.take_ready();
        if let Stop::Failed(reason) = stop {
            let message = format!("the input failed: {reason}");
            self.stats.set_error(&message);
            self.stats.set_state(format!("failed: {message}"));
            self.progress.send_modify(|p| {
                p.flushed = u64::MAX;
                p.failed = true;
            });
            self.link.report_failed();
            return Ok(());
        }
        self.progress.send_modify(|p| p.flushed = u64::MAX);
        if !self.pending.is_empty() {
            let applied = self.link.report_final_acked(self.state_parts(true)?);
            if applied.await.is_err() {
                return Ok(());
            }
            // Checkpoints completed before the coordinator had the final
            // state do not hold these files.
            let mut completed = self.completed.clone();
            let base = *completed.borrow_and_update();
            if completed.wait_for(|e| *e > base).await.is_err() {
                return Ok(());
            }
            // Every pending file is in that checkpoint's final state.
            for (tag, _) in &mut self.pending {
                tag.get_or_insert(0);
            }
            self.commit_through(u64::MAX).await;
        } else {
            self.link.report_final(self.state_parts(true)?);
        }
        self.stats.set_state("finished");
        self.progress.send_modify(|p| p.committed = u64::MAX);
        Ok(())
    }

    async fn write(&mut self, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.take_ready();
        Ok(())
    }

    /// Moves finished files from the writer to the pending list.
    fn take_ready(&mut self) {
        if self.writer.has_ready() {
            self.pending
                .extend(self.writer.take_ready().into_iter().map(|f| (None, f)));
        }
        self.show_buffers();
    }

    /// The sink's state: every uncommitted file.
    fn state_parts(&self, ended: bool) -> Result<Parts> {
        let mut parts = Parts::new();
        let state = SinkState {
            files: self
                .pending
                .iter()
                .map(|(_, f)| FileEntry {
                    dir: f.dir.clone(),
                    name: f.name.clone(),
                    rows: f.rows,
                })
                .collect(),
            ended,
        };
        for (i, (_, f)) in self.pending.iter().enumerate() {
            parts.insert(format!("file-{i}"), f.bytes.clone());
        }
        parts.insert(
            "sink".into(),
            serde_json::to_vec(&state).map_err(|e| crate::internal!("sink state: {e}"))?,
        );
        Ok(parts)
    }

    /// Commits, in order, every pending file a complete checkpoint up to
    /// `epoch` holds, retrying with backoff until it works.
    async fn commit_through(&mut self, epoch: u64) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let ready = self
                .pending
                .iter()
                .take_while(|(tag, _)| tag.is_some_and(|t| t <= epoch))
                .count();
            if ready == 0 {
                break;
            }
            let files: Vec<FinishedFile> = self.pending.drain(..ready).map(|(_, f)| f).collect();
            let root = self.root.clone();
            let (done, left, error) = match tokio::task::spawn_blocking(move || {
                if let Err(e) = crate::state::fault::check("during_sink_commit") {
                    return (Default::default(), files, Some(e));
                }
                commit_files(&root, files)
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(e) => (
                    Default::default(),
                    Vec::new(),
                    Some(crate::internal!("the commit task stopped: {e}")),
                ),
            };
            let tag = Some(0);
            let mut rest: Vec<(Option<u64>, FinishedFile)> =
                left.into_iter().map(|f| (tag, f)).collect();
            rest.append(&mut self.pending);
            self.pending = rest;
            if done.files > 0 {
                self.stats.committed(done);
            }
            self.show_buffers();
            let Some(error) = error else {
                if self.stats.state().starts_with("retrying") {
                    tracing::info!(sink = %self.name, "sink commits again");
                    self.stats.set_state("running");
                }
                continue;
            };
            self.failed_commit(&error, backoff);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if epoch != u64::MAX {
            self.progress
                .send_modify(|p| p.committed = p.committed.max(epoch));
        }
    }

    fn failed_commit(&self, error: &Error, backoff: Duration) {
        tracing::warn!(
            sink = %self.name,
            retry_in_ms = backoff.as_millis() as u64,
            "sink could not commit a file, keeping its rows and retrying: {error}"
        );
        self.stats.commit_errors.fetch_add(1, Ordering::Relaxed);
        self.stats.set_error(&error.to_string());
        self.stats.set_state(format!("retrying: {error}"));
        self.progress.send_modify(|p| {
            p.failures += 1;
            p.error = Some(error.to_string());
        });
    }

    fn show_buffers(&self) {
        let pending: u64 = self.pending.iter().map(|(_, f)| f.rows).sum();
        self.stats
            .rows_buffered
            .store(self.writer.buffered_rows() + pending, Ordering::Relaxed);
        self.stats
            .open_files
            .store(self.writer.open_files() as u64, Ordering::Relaxed);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
