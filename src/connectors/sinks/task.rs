//! The running sink: one task that reads its input's feed (a view's
//! snapshot and changes, or a private query's output), hands rows to the
//! [`ParquetSinkWriter`] and commits finished files, retrying failed
//! commits with backoff.
//!
//! A commit that fails keeps its files (nothing is dropped) and the task
//! stops reading its input until the retry succeeds, so memory stays
//! bounded and the input is held back (backpressure), exactly as a slow
//! view on a view holds back its upstream. FLUSH tickets are answered only
//! after every file before them is visible.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::commit::commit_files;
use super::parquet::ParquetSinkWriter;
use super::{Progress, SinkStats};
use crate::error::{Error, Result};
use crate::operators::{Attachment, ViewEvent};

/// First wait after a failed commit; doubled per failure up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) struct SinkTask {
    pub name: String,
    pub root: std::path::PathBuf,
    pub writer: ParquetSinkWriter,
    pub stats: Arc<SinkStats>,
    pub progress: watch::Sender<Progress>,
}

/// How the input stopped.
enum Stop {
    Ended,
    Failed(String),
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
            for batch in snapshot.iter() {
                self.write(batch).await?;
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
        }
    }

    async fn follow(&mut self, mut feed: mpsc::Receiver<ViewEvent>) -> Result<Stop> {
        loop {
            let deadline = self.writer.next_deadline().map(Instant::from_std);
            let event = tokio::select! {
                event = feed.recv() => event,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.writer.roll_expired(std::time::Instant::now())?;
                    self.commit().await;
                    continue;
                }
            };
            match event {
                Some(ViewEvent::Data(batch)) => self.write(&batch).await?,
                Some(ViewEvent::Watermark(w)) => self.stats.watermark.store(w, Ordering::Relaxed),
                Some(ViewEvent::Flush(ticket)) => {
                    self.writer.roll_all()?;
                    self.commit().await;
                    self.progress
                        .send_modify(|p| p.flushed = p.flushed.max(ticket));
                }
                Some(ViewEvent::End) | None => return Ok(Stop::Ended),
                Some(ViewEvent::Failed(reason)) => return Ok(Stop::Failed(reason.to_string())),
            }
        }
    }

    /// Commits what is left; the input will send nothing more.
    async fn finish(&mut self, stop: Stop) -> Result<()> {
        self.writer.roll_all()?;
        self.commit().await;
        match stop {
            Stop::Ended => self.stats.set_state("finished"),
            Stop::Failed(reason) => {
                let message = format!("the input failed: {reason}");
                self.stats.set_error(&message);
                self.stats.set_state(format!("failed: {message}"));
            }
        }
        self.progress.send_modify(|p| p.flushed = u64::MAX);
        Ok(())
    }

    async fn write(&mut self, batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.show_buffers();
        if self.writer.has_ready() {
            self.commit().await;
        }
        Ok(())
    }

    /// Commits every finished file, retrying with backoff until it works.
    async fn commit(&mut self) {
        let mut backoff = FIRST_BACKOFF;
        while self.writer.has_ready() {
            let files = self.writer.take_ready();
            let root = self.root.clone();
            let (done, left, error) =
                match tokio::task::spawn_blocking(move || commit_files(&root, files)).await {
                    Ok(outcome) => outcome,
                    Err(e) => (
                        Default::default(),
                        Vec::new(),
                        Some(crate::internal!("the commit task stopped: {e}")),
                    ),
                };
            self.writer.restore_ready(left);
            if done.files > 0 {
                self.stats.committed(done);
            }
            self.show_buffers();
            let Some(error) = error else {
                if self.stats.state().starts_with("retrying") {
                    tracing::info!(sink = %self.name, "sink commits again");
                    self.stats.set_state("running");
                }
                return;
            };
            self.failed_commit(&error, backoff);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
        self.stats
            .rows_buffered
            .store(self.writer.buffered_rows(), Ordering::Relaxed);
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
