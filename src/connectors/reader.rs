//! [`SourceReader`]: one reader of a source — the merge of its splits into
//! one [`Message`] stream, with the source watermark (the minimum over
//! active splits, idle splits excluded), FLUSH barriers released once
//! every split has caught up, and checkpoint barriers emitted at once with
//! the resume position of every split as of the rows before them. Every
//! task of a reader is owned by it: dropping the reader stops them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::SourceSpec;
use super::runtime::{ReaderContext, SourceStats, SplitEvent};
use crate::error::Result;
use crate::stream::{Barrier, BarrierKind, EventTime, Message};

/// Resume positions of one reader: split id -> where that split continues
/// after everything delivered so far. The text belongs to the connector
/// (`position.rs`: a Kafka partition's next offset, a file's byte offset
/// and identity, a generator's row count and random-stream state). Splits
/// that have ended stay listed, so that a resumed reader does not read
/// them again.
pub type SplitPositions = BTreeMap<String, String>;

/// Per split, what the merge knows.
struct SplitClock {
    watermark: Option<EventTime>,
    last_data: Instant,
    /// The last FLUSH epoch the split has answered.
    caught_up: u64,
}

impl SplitClock {
    fn new() -> Self {
        SplitClock {
            watermark: None,
            last_data: Instant::now(),
            caught_up: 0,
        }
    }
}

/// FLUSH requests of one reader: (ticket, source epoch), oldest first.
#[derive(Clone, Default)]
pub struct FlushRequests {
    pending: Arc<Mutex<VecDeque<(u64, u64)>>>,
    stats: Arc<SourceStats>,
}

impl FlushRequests {
    /// Asks for a `Flush(ticket)` barrier once every split has delivered
    /// what is available now.
    pub fn request(&self, ticket: u64) {
        // The epoch is started and recorded under the lock, so the reader
        // never sees the new epoch (and its splits' answers) without the
        // request that goes with it.
        if let Ok(mut p) = self.pending.lock() {
            let epoch = self.stats.request_flush();
            p.push_back((ticket, epoch));
        }
    }
}

/// Checkpoint barriers asked of one reader, and the positions recorded
/// when each was emitted.
#[derive(Clone, Default)]
pub struct CheckpointRequests {
    shared: Arc<Checkpoints>,
}

#[derive(Default)]
struct Checkpoints {
    /// Epochs asked for and not yet emitted, oldest first.
    asked: Mutex<Vec<u64>>,
    /// True while `asked` may be non-empty: the reader checks it at every
    /// message without taking the lock.
    waiting: AtomicBool,
    recorded: Mutex<Recorded>,
    /// Wakes a reader waiting for its splits.
    wake: Notify,
}

#[derive(Default)]
struct Recorded {
    /// Positions by epoch, as of the rows before that epoch's barrier.
    by_epoch: BTreeMap<u64, SplitPositions>,
    /// The final positions of a reader whose input has ended: it emits no
    /// more barriers, and these stand for every later checkpoint.
    ended: Option<SplitPositions>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CheckpointRequests {
    /// Asks for a `Checkpoint` barrier of `epoch` at the next message
    /// boundary. Unlike FLUSH it does not wait for the splits to catch up:
    /// the positions recorded with it say where each split stands.
    pub fn request(&self, epoch: u64) {
        if lock(&self.shared.recorded).ended.is_some() {
            return;
        }
        lock(&self.shared.asked).push(epoch);
        self.shared.waiting.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// The positions recorded when the barrier of `epoch` was emitted;
    /// `None` if it has not been emitted (yet). Once the reader has ended
    /// (a finite source read to its end emits no barrier after), its final
    /// positions: ask only once the end of its stream has reached the
    /// consumer, since its last rows may still be on the way. Forgets this
    /// epoch's and older epochs' positions.
    pub fn take_positions(&self, epoch: u64) -> Option<SplitPositions> {
        let mut recorded = lock(&self.shared.recorded);
        let taken = recorded.by_epoch.remove(&epoch);
        recorded.by_epoch.retain(|e, _| *e > epoch);
        taken.or_else(|| recorded.ended.clone())
    }

    /// The epochs asked for since the last call.
    fn asked(&self) -> Vec<u64> {
        // A load first: the common case (nothing asked) writes nothing.
        if !self.shared.waiting.load(Ordering::SeqCst)
            || !self.shared.waiting.swap(false, Ordering::SeqCst)
        {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.shared.asked))
    }

    fn record(&self, epoch: u64, positions: SplitPositions) {
        lock(&self.shared.recorded)
            .by_epoch
            .insert(epoch, positions);
    }

    fn end(&self, positions: SplitPositions) {
        lock(&self.shared.recorded).ended = Some(positions);
    }
}

/// One reader of a source: the merged stream of its splits.
pub struct SourceReader {
    spec: Arc<SourceSpec>,
    stats: Arc<SourceStats>,
    rx: mpsc::Receiver<SplitEvent>,
    /// Owned so that dropping the reader stops every task it started.
    _tasks: JoinSet<()>,
    splits: HashMap<Arc<str>, SplitClock>,
    emitted: Option<EventTime>,
    pending: VecDeque<Message>,
    done: bool,
    /// The connector has announced its initial splits.
    ready: bool,
    /// The input ends by itself; once its last split has ended, FLUSH waits
    /// for the end (and its final watermark) rather than passing before it.
    finite: bool,
    flushes: FlushRequests,
    /// The source epoch already seen, to notice new FLUSH requests.
    seen_epoch: u64,
    checkpoints: CheckpointRequests,
    /// Where each split resumes after the rows emitted so far: the
    /// positions the reader started from, moved on by its splits.
    positions: SplitPositions,
}

/// The channel depth between splits and their reader: enough to overlap
/// decoding with downstream work, small enough to bound memory.
const READER_CHANNEL: usize = 16;

impl SourceReader {
    /// Creates a reader and lets `start` attach the connector's splits,
    /// which continue from `resume` where it names them.
    pub fn start(
        spec: Arc<SourceSpec>,
        stats: Arc<SourceStats>,
        finite: bool,
        resume: SplitPositions,
        start: impl FnOnce(&mut ReaderContext) -> Result<()>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(READER_CHANNEL);
        let mut ctx = ReaderContext {
            spec: spec.clone(),
            stats: stats.clone(),
            resume: resume.clone(),
            tx,
            tasks: JoinSet::new(),
        };
        start(&mut ctx)?;
        let ReaderContext { tasks, .. } = ctx;
        stats.readers.fetch_add(1, Ordering::Relaxed);
        stats.set_state("running");
        Ok(SourceReader {
            spec,
            stats: stats.clone(),
            rx,
            _tasks: tasks,
            splits: HashMap::new(),
            emitted: None,
            pending: VecDeque::new(),
            done: false,
            ready: false,
            finite,
            flushes: FlushRequests {
                pending: Arc::default(),
                stats: stats.clone(),
            },
            seen_epoch: stats.flush_epoch(),
            checkpoints: CheckpointRequests::default(),
            // Until a split says otherwise, it resumes where this reader
            // started it: nothing of it has been emitted yet.
            positions: resume,
        })
    }

    /// The handle through which a dataflow asks this reader for FLUSH
    /// barriers.
    pub fn flush_requests(&self) -> FlushRequests {
        self.flushes.clone()
    }

    /// The handle through which a checkpoint asks this reader for its
    /// barrier and takes the positions recorded with it.
    pub fn checkpoint_requests(&self) -> CheckpointRequests {
        self.checkpoints.clone()
    }

    /// Emits the checkpoint barriers asked for, after the messages already
    /// queued, recording the positions those messages bring the splits to.
    fn emit_checkpoints(&mut self) {
        for epoch in self.checkpoints.asked() {
            self.checkpoints.record(epoch, self.positions.clone());
            self.pending.push_back(Message::Barrier(Barrier {
                epoch,
                kind: BarrierKind::Checkpoint,
            }));
        }
    }

    fn set_position(&mut self, split: &str, position: String) {
        match self.positions.get_mut(split) {
            Some(p) => *p = position,
            None => {
                self.positions.insert(split.to_string(), position);
            }
        }
    }

    /// Emits the FLUSH barriers every split has caught up with.
    fn release_flushes(&mut self) {
        if !self.ready || (self.finite && self.splits.is_empty()) {
            return;
        }
        let Ok(mut pending) = self.flushes.pending.lock() else {
            return;
        };
        while let Some(&(ticket, epoch)) = pending.front() {
            if self.splits.values().any(|c| c.caught_up < epoch) {
                break;
            }
            pending.pop_front();
            self.pending.push_back(Message::Barrier(Barrier {
                epoch,
                kind: BarrierKind::Flush(ticket),
            }));
        }
    }

    /// The next message; `None` once a finite source has ended (after a
    /// final watermark that closes every window).
    pub async fn next(&mut self) -> Option<Result<Message>> {
        loop {
            self.emit_checkpoints();
            if let Some(m) = self.pending.pop_front() {
                return Some(Ok(m));
            }
            if self.done {
                return None;
            }
            self.release_flushes();
            if let Some(m) = self.pending.pop_front() {
                return Some(Ok(m));
            }
            let stats = self.stats.clone();
            let checkpoints = self.checkpoints.shared.clone();
            let seen = self.seen_epoch;
            let deadline = self.idle_deadline();
            let event = tokio::select! {
                event = self.rx.recv() => event,
                _ = stats.flush_wanted(seen) => {
                    self.seen_epoch = stats.flush_epoch();
                    continue;
                }
                _ = checkpoints.wake.notified() => continue,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.advance_watermark();
                    continue;
                }
            };
            match event {
                None => {
                    // Every task has ended: a finite source is complete.
                    self.done = true;
                    self.checkpoints.end(self.positions.clone());
                    self.stats.set_state("finished");
                    if self.emitted != Some(EventTime::MAX) && self.spec.event_time.is_some() {
                        self.emit(EventTime::MAX);
                    }
                }
                Some(SplitEvent::Failed(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(SplitEvent::Ready) => self.ready = true,
                Some(SplitEvent::Start(split)) => {
                    self.splits.entry(split).or_insert_with(SplitClock::new);
                }
                Some(SplitEvent::CaughtUp { split, epoch }) => {
                    let clock = self.splits.entry(split).or_insert_with(SplitClock::new);
                    clock.caught_up = clock.caught_up.max(epoch);
                }
                Some(SplitEvent::End(split)) => {
                    self.splits.remove(&split);
                    self.advance_watermark();
                }
                Some(SplitEvent::Position { split, position }) => match position {
                    Some(p) => self.set_position(&split, p),
                    None => {
                        self.positions.remove(&*split);
                    }
                },
                Some(SplitEvent::Data {
                    split,
                    batch,
                    watermark,
                    position,
                }) => {
                    if let Some(p) = position {
                        self.set_position(&split, p);
                    }
                    let clock = self.splits.entry(split).or_insert_with(SplitClock::new);
                    clock.last_data = Instant::now();
                    if watermark > clock.watermark {
                        clock.watermark = watermark;
                    }
                    self.pending.push_back(Message::Data(batch));
                    self.advance_watermark();
                }
            }
        }
    }

    /// When the next active split would turn idle.
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.spec.idle_timeout?;
        let now = Instant::now();
        self.splits
            .values()
            .map(|c| c.last_data + timeout)
            .filter(|t| *t > now)
            .min()
    }

    /// Minimum over active splits; when every split is idle, the maximum,
    /// so that a quiet input still lets windows close.
    fn advance_watermark(&mut self) {
        if self.spec.event_time.is_none() || self.splits.is_empty() {
            return;
        }
        let now = Instant::now();
        let idle = |c: &SplitClock| {
            self.spec
                .idle_timeout
                .is_some_and(|t| now.duration_since(c.last_data) >= t)
        };
        let active: Vec<Option<EventTime>> = self
            .splits
            .values()
            .filter(|c| !idle(c))
            .map(|c| c.watermark)
            .collect();
        let candidate = if active.is_empty() {
            self.splits.values().filter_map(|c| c.watermark).max()
        } else if active.iter().any(Option::is_none) {
            None
        } else {
            active.into_iter().flatten().min()
        };
        if let Some(wm) = candidate
            && self.emitted.is_none_or(|e| wm > e)
        {
            self.emit(wm);
        }
    }

    fn emit(&mut self, wm: EventTime) {
        self.emitted = Some(wm);
        self.stats.watermark.fetch_max(wm, Ordering::Relaxed);
        self.pending.push_back(Message::Watermark(wm));
    }

    /// The reader as a stream of messages.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Message>> + Send {
        futures::stream::unfold(self, |mut reader| async move {
            reader.next().await.map(|m| (m, reader))
        })
    }
}

impl Drop for SourceReader {
    fn drop(&mut self) {
        if self.stats.readers.fetch_sub(1, Ordering::Relaxed) == 1 {
            let state = self.stats.state();
            if state == "running" {
                self.stats.set_state("idle");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::testing::{next, source};

    fn checkpoint(m: Option<Message>) -> u64 {
        match m {
            Some(Message::Barrier(Barrier {
                epoch,
                kind: BarrierKind::Checkpoint,
            })) => epoch,
            other => panic!("expected a checkpoint barrier, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_checkpoint_barrier_waits_neither_for_flush_nor_for_splits() {
        // A broker nobody answers: the reader never learns its partitions,
        // so no split ever catches up and FLUSH cannot pass.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let source = source(&format!(
            "CREATE SOURCE k (v INT) WITH (connector = 'kafka', topic = 't', \
             properties.bootstrap.server = '127.0.0.1:{port}') FORMAT JSON"
        ))
        .await;
        assert!(source.can_replay());
        let recorded = SplitPositions::from([("partition 0".into(), "offset=42".into())]);
        let mut reader = source.open_reader_at(Some(&recorded)).unwrap();
        reader.flush_requests().request(1);
        let checkpoints = reader.checkpoint_requests();
        checkpoints.request(3);
        checkpoints.request(4);
        assert_eq!(checkpoint(next(&mut reader).await), 3);
        assert_eq!(checkpoint(next(&mut reader).await), 4);
        // A split not started yet keeps the position it resumes from.
        assert_eq!(checkpoints.take_positions(4), Some(recorded.clone()));
        assert_eq!(
            checkpoints.take_positions(3),
            None,
            "older epochs are dropped"
        );
        assert_eq!(checkpoints.take_positions(5), None, "not emitted yet");
        // Asked while the reader waits for its splits: it wakes up.
        let waiting = tokio::spawn(async move {
            let m = next(&mut reader).await;
            (m, reader)
        });
        checkpoints.request(5);
        let (m, _reader) = waiting.await.unwrap();
        assert_eq!(checkpoint(m), 5);
        assert_eq!(checkpoints.take_positions(5), Some(recorded));
    }
}
