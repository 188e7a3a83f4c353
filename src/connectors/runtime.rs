//! The source runtime shared by every connector: splits, decoding, event
//! time, counters and the error log.
//!
//! A connector only moves bytes (or generates rows). It hands each chunk to
//! a [`SplitWriter`], which decodes it, keeps the bad records in the error
//! log, computes the split's watermark and sends the rows on, each batch
//! with the split's resume position (what a checkpoint records; set by the
//! connector, opaque here). The reader (`reader.rs`) merges the splits of
//! one reader into one message stream.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::SourceSpec;
use super::format::{Decoded, RecordDecoder};
use super::reader::SplitPositions;
use super::records::{RAW_ERROR_BYTES, RawRecords};
use crate::error::{Error, Result};
use crate::stream::EventTime;

/// Errors kept per source for the error table; older ones are dropped
/// (they stay counted).
const ERROR_LOG_CAPACITY: usize = 1000;

/// What one split tells its reader.
#[derive(Debug)]
pub enum SplitEvent {
    /// The split exists and should hold back the watermark until it
    /// produces data or goes idle.
    Start(Arc<str>),
    Data {
        split: Arc<str>,
        batch: RecordBatch,
        watermark: Option<EventTime>,
        /// Where the split resumes after this batch (see `position.rs`);
        /// `None` for splits that cannot resume.
        position: Option<String>,
    },
    /// The split's resume position moved without rows (records skipped as
    /// bad, a reader positioned at its start), or, with `None`, the split
    /// is gone for good and a resumed reader must not look for it.
    Position {
        split: Arc<str>,
        position: Option<String>,
    },
    /// The split has ended (a file read to its end, a connection closed).
    End(Arc<str>),
    /// The connector has announced every split it starts with; until then a
    /// FLUSH cannot know that nothing is missing.
    Ready,
    /// The split has delivered everything that was available when FLUSH
    /// epoch `epoch` was requested.
    CaughtUp {
        split: Arc<str>,
        epoch: u64,
    },
    Failed(Error),
}

/// A bad record, kept for `runnel_catalog.source_errors`.
#[derive(Debug, Clone)]
pub struct SourceErrorRecord {
    pub at: SystemTime,
    pub split: String,
    pub position: u64,
    pub message: String,
    /// The record's first bytes.
    pub raw: Vec<u8>,
}

/// Live figures of one source, summed over its readers.
#[derive(Debug)]
pub struct SourceStats {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub errors: AtomicU64,
    /// The last watermark a reader emitted; `EventTime::MIN` before any.
    pub watermark: AtomicI64,
    pub readers: AtomicUsize,
    state: Mutex<String>,
    /// Bumped by each FLUSH; splits answer with `CaughtUp` once they have
    /// delivered everything available at that moment.
    flush_epoch: AtomicU64,
    flush_notify: Notify,
    /// Per split: last position read and, where known, how far behind the
    /// end of the split it is.
    positions: Mutex<BTreeMap<String, (u64, Option<i64>)>>,
    errors_log: Mutex<VecDeque<SourceErrorRecord>>,
}

impl Default for SourceStats {
    fn default() -> Self {
        SourceStats {
            records_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            watermark: AtomicI64::new(EventTime::MIN),
            readers: AtomicUsize::new(0),
            state: Mutex::new("idle".into()),
            flush_epoch: AtomicU64::new(0),
            flush_notify: Notify::new(),
            positions: Mutex::new(BTreeMap::new()),
            errors_log: Mutex::new(VecDeque::new()),
        }
    }
}

impl SourceStats {
    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Starts a FLUSH epoch; returns it.
    pub fn request_flush(&self) -> u64 {
        let epoch = self.flush_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.flush_notify.notify_waiters();
        epoch
    }

    pub fn flush_epoch(&self) -> u64 {
        self.flush_epoch.load(Ordering::SeqCst)
    }

    /// Resolves once a FLUSH epoch above `seen` is requested. Splits that
    /// block on input (an idle socket) wait on this beside their read.
    pub async fn flush_wanted(&self, seen: u64) {
        loop {
            let notified = self.flush_notify.notified();
            if self.flush_epoch() > seen {
                return;
            }
            notified.await;
        }
    }

    pub fn set_state(&self, state: impl Into<String>) {
        if let Ok(mut s) = self.state.lock() {
            *s = state.into();
        }
    }

    /// Records where a split is and how far behind its end (e.g. Kafka's
    /// high watermark) it is.
    pub fn set_position(&self, split: &str, position: u64, lag: Option<i64>) {
        if let Ok(mut p) = self.positions.lock() {
            p.insert(split.to_string(), (position, lag));
        }
    }

    /// Moves a split's position on, keeping the lag last reported for it
    /// (connectors that know the end of a split report it with the rows).
    fn advance_position(&self, split: &str, position: u64) {
        if let Ok(mut p) = self.positions.lock() {
            match p.get_mut(split) {
                Some(entry) => entry.0 = position,
                None => {
                    p.insert(split.to_string(), (position, None));
                }
            }
        }
    }

    /// Forgets a split that is gone for good (a closed TCP connection), so
    /// that short-lived splits do not pile up.
    pub fn remove_position(&self, split: &str) {
        if let Ok(mut p) = self.positions.lock() {
            p.remove(split);
        }
    }

    pub fn positions(&self) -> BTreeMap<String, (u64, Option<i64>)> {
        self.positions.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn error_log(&self) -> Vec<SourceErrorRecord> {
        self.errors_log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn record_error(&self, record: SourceErrorRecord) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut log) = self.errors_log.lock() {
            if log.len() == ERROR_LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(record);
        }
    }
}

/// Where a split's events go: one reader, or every reader attached to a
/// source that is shared by nature (a listening socket).
#[derive(Clone)]
pub enum Downstream {
    One(mpsc::Sender<SplitEvent>),
    Fanout(Arc<Fanout>),
}

impl Downstream {
    async fn send(&self, event: impl Fn() -> SplitEvent) -> Result<()> {
        match self {
            Downstream::One(tx) => tx
                .send(event())
                .await
                .map_err(|_| Error::Canceled("the reader of this source has stopped")),
            Downstream::Fanout(f) => {
                f.send(event).await;
                Ok(())
            }
        }
    }
}

/// The readers currently attached to a shared source. With none attached,
/// senders wait: a client's bytes stay in the socket rather than being lost.
#[derive(Default)]
pub struct Fanout {
    readers: Mutex<Vec<mpsc::Sender<SplitEvent>>>,
    attached: Notify,
}

impl Fanout {
    pub fn attach(&self, tx: mpsc::Sender<SplitEvent>) {
        if let Ok(mut r) = self.readers.lock() {
            r.push(tx);
        }
        self.attached.notify_waiters();
    }

    /// Waits until at least one reader is attached.
    pub async fn wait_for_reader(&self) {
        loop {
            let notified = self.attached.notified();
            if self.live_readers() > 0 {
                return;
            }
            notified.await;
        }
    }

    fn live_readers(&self) -> usize {
        let Ok(mut r) = self.readers.lock() else {
            return 0;
        };
        r.retain(|tx| !tx.is_closed());
        r.len()
    }

    /// Delivers `event` to every attached reader, waiting for one if none
    /// is. Connectors call it directly for events no split writer sends
    /// (a failure under `on_error = 'fail'`).
    pub async fn send(&self, event: impl Fn() -> SplitEvent) {
        loop {
            self.wait_for_reader().await;
            let readers: Vec<_> = self.readers.lock().map(|r| r.clone()).unwrap_or_default();
            let mut delivered = false;
            for tx in readers {
                delivered |= tx.send(event()).await.is_ok();
            }
            if delivered {
                return;
            }
        }
    }
}

/// Decodes and forwards the records of one split.
pub struct SplitWriter {
    id: Arc<str>,
    spec: Arc<SourceSpec>,
    stats: Arc<SourceStats>,
    decoder: Arc<RecordDecoder>,
    downstream: Downstream,
    /// Highest watermark of this split so far.
    watermark: Option<EventTime>,
    /// The last FLUSH epoch this split answered.
    caught_up: u64,
    /// Where the split resumes after what it has handed over so far (set by
    /// the connector before the records it describes).
    position: Option<String>,
    /// The position the reader was last told.
    told: Option<String>,
}

impl SplitWriter {
    pub fn new(
        id: impl Into<Arc<str>>,
        spec: Arc<SourceSpec>,
        stats: Arc<SourceStats>,
        downstream: Downstream,
    ) -> Self {
        SplitWriter {
            id: id.into(),
            decoder: spec.decoder.clone(),
            spec,
            stats,
            downstream,
            watermark: None,
            caught_up: 0,
            position: None,
            told: None,
        }
    }

    /// Sets where the split resumes once the next records (or, without
    /// records, [`SplitWriter::tell_position`]) reach the reader: after
    /// everything handed over by then. Splits that never call this record
    /// no position (they cannot resume).
    pub fn resume_at(&mut self, position: String) {
        self.position = Some(position);
    }

    /// Tells the reader the position set with `resume_at` if it has
    /// changed since the last batch: the position moved without rows.
    pub async fn tell_position(&mut self) -> Result<()> {
        if self.position == self.told {
            return Ok(());
        }
        self.told = self.position.clone();
        let (id, position) = (self.id.clone(), self.position.clone());
        self.downstream
            .send(|| SplitEvent::Position {
                split: id.clone(),
                position: position.clone(),
            })
            .await
    }

    /// The split is gone for good (a followed file deleted): a resumed
    /// reader must not look for it.
    pub async fn forget_position(&mut self) -> Result<()> {
        self.position = None;
        self.told = None;
        let id = self.id.clone();
        self.downstream
            .send(|| SplitEvent::Position {
                split: id.clone(),
                position: None,
            })
            .await
    }

    /// A generator has written every row due so far. A throttled or endless
    /// generator answers FLUSH here (the tick's rows are what is available);
    /// a finite one without a rate has all its rows available at once, so
    /// it answers FLUSH only by finishing. Unthrottled, it then yields so
    /// the reader's consumers run between batches.
    pub async fn generated_due(&mut self, throttled: bool, finite: bool) -> Result<()> {
        if throttled || !finite {
            self.caught_up().await?;
        }
        if !throttled {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Connectors call this whenever the split has delivered everything
    /// available right now (end of a file, a fetch at the high watermark,
    /// nothing more ready on a socket, a generator tick). Answers a pending
    /// FLUSH; costs nothing otherwise.
    pub async fn caught_up(&mut self) -> Result<()> {
        let epoch = self.stats.flush_epoch();
        self.caught_up_to(epoch).await
    }

    /// Like [`SplitWriter::caught_up`], for a connector that learned what
    /// was available at some earlier moment (a fetch's high watermark):
    /// it answers only the FLUSH epochs requested before that moment
    /// (`SourceStats::flush_epoch` read then), never one asked later.
    pub async fn caught_up_to(&mut self, epoch: u64) -> Result<()> {
        if epoch <= self.caught_up {
            return Ok(());
        }
        self.caught_up = epoch;
        let id = self.id.clone();
        self.downstream
            .send(|| SplitEvent::CaughtUp {
                split: id.clone(),
                epoch,
            })
            .await
    }

    /// The last FLUSH epoch answered, for `SourceStats::flush_wanted`.
    pub fn answered_epoch(&self) -> u64 {
        self.caught_up
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// Makes the split hold back the source watermark before its first row.
    pub async fn announce(&self) -> Result<()> {
        let id = self.id.clone();
        self.downstream.send(|| SplitEvent::Start(id.clone())).await
    }

    /// Decodes `records` and sends the good ones. Bad records are logged
    /// and skipped, or fail the split under `on_error = 'fail'`.
    pub async fn records(&mut self, records: RawRecords) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.stats
            .bytes_in
            .fetch_add(records.byte_len() as u64, Ordering::Relaxed);
        let Decoded {
            batch,
            kept,
            errors,
        } = self.decoder.decode(&records);
        for e in &errors {
            let raw = records.record(e.index);
            let record = SourceErrorRecord {
                at: SystemTime::now(),
                split: self.id.to_string(),
                position: records.position(e.index),
                message: e.message.clone(),
                raw: raw[..raw.len().min(RAW_ERROR_BYTES)].to_vec(),
            };
            self.bad_record(record)?;
        }
        let mut columns = batch.columns().to_vec();
        for meta in &records.metadata {
            columns.push(match &kept {
                Some(mask) => filter(meta, mask)?,
                None => meta.clone(),
            });
        }
        let batch = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
        if let Some(last) = records.last_position() {
            self.stats.advance_position(&self.id, last);
        }
        self.send_batch(batch).await
    }

    /// A record the connector refused itself (a line over the length
    /// limit), treated like one the decoder refused.
    pub fn reject(&self, position: u64, message: String, raw: &[u8]) -> Result<()> {
        self.bad_record(SourceErrorRecord {
            at: SystemTime::now(),
            split: self.id.to_string(),
            position,
            message,
            raw: raw[..raw.len().min(RAW_ERROR_BYTES)].to_vec(),
        })
    }

    /// Logs and skips a bad record, or stops under `on_error = 'fail'`.
    fn bad_record(&self, record: SourceErrorRecord) -> Result<()> {
        if self.spec.fail_on_error {
            return Err(Error::Data {
                sqlstate: "22P02",
                message: format!(
                    "source \"{}\" stopped at a bad record ({} at position {}): {} \
                     (on_error = 'fail'; use on_error = 'skip' to skip bad records)",
                    self.spec.name, record.split, record.position, record.message
                ),
            });
        }
        self.stats.record_error(record);
        Ok(())
    }

    /// Sends rows that are already columnar (generators).
    pub async fn batch(&mut self, batch: RecordBatch, position: u64) -> Result<()> {
        self.stats
            .bytes_in
            .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
        self.stats.set_position(&self.id, position, None);
        self.send_batch(batch).await
    }

    /// Updates the lag shown for this split (e.g. from a Kafka high
    /// watermark) without data.
    pub fn set_lag(&self, position: u64, lag: Option<i64>) {
        self.stats.set_position(&self.id, position, lag);
    }

    async fn send_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            // Every record was bad: the position still moves past them.
            return self.tell_position().await;
        }
        if let Some(wm) = self.spec.watermark_of(&batch)? {
            self.watermark = Some(self.watermark.map_or(wm, |old| old.max(wm)));
        }
        self.stats
            .records_in
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        let (id, wm) = (self.id.clone(), self.watermark);
        self.told = self.position.clone();
        let position = self.position.clone();
        self.downstream
            .send(|| SplitEvent::Data {
                split: id.clone(),
                batch: batch.clone(),
                watermark: wm,
                position: position.clone(),
            })
            .await
    }

    /// The split is done; it no longer holds back the watermark.
    pub async fn finish(self) -> Result<()> {
        let id = self.id.clone();
        self.downstream.send(|| SplitEvent::End(id.clone())).await
    }
}

/// What a connector's `start` gets: where to send, and where to put the
/// tasks that read.
pub struct ReaderContext {
    pub spec: Arc<SourceSpec>,
    pub stats: Arc<SourceStats>,
    /// Recorded positions to continue from, by split; empty for a reader
    /// that starts where the source starts.
    pub resume: SplitPositions,
    pub(super) tx: mpsc::Sender<SplitEvent>,
    pub(super) tasks: JoinSet<()>,
}

impl ReaderContext {
    /// A writer for a split of this reader.
    pub fn split(&self, id: impl Into<Arc<str>>) -> SplitWriter {
        SplitWriter::new(
            id,
            self.spec.clone(),
            self.stats.clone(),
            Downstream::One(self.tx.clone()),
        )
    }

    /// A signal the connector sends once it has announced its initial
    /// splits (for a TCP source: at once, connections come and go).
    pub fn ready_signal(&self) -> ReadySignal {
        ReadySignal(self.tx.clone())
    }

    /// The raw channel, for sources that fan out to several readers.
    pub fn sender(&self) -> mpsc::Sender<SplitEvent> {
        self.tx.clone()
    }

    /// Runs `task` as part of this reader. Its error (or panic) fails the
    /// reader; its end, once every task has ended, ends a finite source.
    pub fn spawn(&mut self, task: impl Future<Output = Result<()>> + Send + 'static) {
        let tx = self.tx.clone();
        let stats = self.stats.clone();
        self.tasks.spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            let error = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(Error::Canceled(_))) => return,
                Ok(Err(e)) => e,
                Err(panic) => crate::error::Error::Internal(format!(
                    "source reader panicked: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                )),
            };
            stats.set_state(format!("failed: {error}"));
            let _ = tx.send(SplitEvent::Failed(error)).await;
        });
    }
}

/// Sent once by a connector: "every split I start with is announced".
pub struct ReadySignal(mpsc::Sender<SplitEvent>);

impl ReadySignal {
    pub async fn send(self) -> Result<()> {
        self.0
            .send(SplitEvent::Ready)
            .await
            .map_err(|_| Error::Canceled("the reader of this source has stopped"))
    }
}

/// The largest event time in `column`, converted to microseconds.
pub fn max_event_time(column: &ArrayRef) -> Result<Option<EventTime>> {
    let micros = match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, None) => column.clone(),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?
        }
        other => {
            return Err(crate::internal!("event time column of type {other}"));
        }
    };
    let values = micros.as_primitive::<TimestampMicrosecondType>();
    Ok(datafusion::arrow::compute::max(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMillisecondArray;

    #[test]
    fn event_time_is_normalized_to_microseconds() {
        let a: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(5),
            None,
            Some(2),
        ]));
        assert_eq!(max_event_time(&a).unwrap(), Some(5000));
        let empty: ArrayRef = Arc::new(TimestampMillisecondArray::from(Vec::<i64>::new()));
        assert_eq!(max_event_time(&empty).unwrap(), None);
        assert!(a.len() == 3);
    }
}
