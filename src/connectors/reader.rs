//! [`SourceReader`]: one reader of a source — the merge of its splits into
//! one [`Message`] stream, with the source watermark (the minimum over
//! active splits, idle splits excluded) and FLUSH barriers released once
//! every split has caught up. Every task of a reader is owned by it:
//! dropping the reader stops them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::SourceSpec;
use super::runtime::{ReaderContext, SourceStats, SplitEvent};
use crate::error::Result;
use crate::stream::{EventTime, Message};

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
}

/// The channel depth between splits and their reader: enough to overlap
/// decoding with downstream work, small enough to bound memory.
const READER_CHANNEL: usize = 16;

impl SourceReader {
    /// Creates a reader and lets `start` attach the connector's splits.
    pub fn start(
        spec: Arc<SourceSpec>,
        stats: Arc<SourceStats>,
        finite: bool,
        start: impl FnOnce(&mut ReaderContext) -> Result<()>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(READER_CHANNEL);
        let mut ctx = ReaderContext {
            spec: spec.clone(),
            stats: stats.clone(),
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
        })
    }

    /// The handle through which a dataflow asks this reader for FLUSH
    /// barriers.
    pub fn flush_requests(&self) -> FlushRequests {
        self.flushes.clone()
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
            self.pending
                .push_back(Message::Barrier(crate::stream::Barrier {
                    epoch,
                    kind: crate::stream::BarrierKind::Flush(ticket),
                }));
        }
    }

    /// The next message; `None` once a finite source has ended (after a
    /// final watermark that closes every window).
    pub async fn next(&mut self) -> Option<Result<Message>> {
        loop {
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
            let seen = self.seen_epoch;
            let deadline = self.idle_deadline();
            let event = tokio::select! {
                event = self.rx.recv() => event,
                _ = stats.flush_wanted(seen) => {
                    self.seen_epoch = stats.flush_epoch();
                    continue;
                }
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
                Some(SplitEvent::Data {
                    split,
                    batch,
                    watermark,
                }) => {
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
