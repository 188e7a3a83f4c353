//! [`Dataflow`]: a running materialized view — the tasks that read its
//! inputs, run its operators on every core, and publish its rows.
//!
//! Shape: one task per input (a source, or another view's feed) runs that
//! input's own stateless steps; the ingest task merges the inputs (UNION
//! ALL: minimum watermark, a FLUSH ticket once every input passed it) and
//! runs the stateless steps after the merge;
//! rows of a keyed (aggregating) view are then routed by the hash of their
//! key into one of 128 key groups, and each key group belongs to one of
//! `parallelism` instance tasks; one sink task merges the instances' output
//! into the view. Watermarks and barriers are broadcast to every instance;
//! the sink takes the minimum watermark and aligns barriers over its inputs.
//! All tasks live in the `Dataflow`'s JoinSet: dropping it stops them and
//! frees their state.
//!
//! Checkpoints (docs/design/0008): a source input's reader emits the
//! checkpoint barrier and records its splits' positions; every task
//! snapshots its operators when the barrier passes it; the merge and the
//! sink align the barrier over their inputs; the sink adds the view's rows
//! and reports the whole state to the coordinator through the
//! [`CheckpointLink`], then passes the barrier on to attached dataflows.
//! Started from a checkpoint, every task restores its part first and
//! source inputs continue from the recorded positions.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::align::{Aligned, Aligner};
use super::{Barrier, BarrierKind, Chain, EventTime, Message, OperatorMetrics, changelog};
use crate::connectors::{CheckpointRequests, SplitPositions};
use crate::error::{Error, Result};
use crate::operators::{Attachment, ViewContents, ViewEvent};
use crate::planner::{Input, Step, StreamPlan};
use crate::state::{CheckpointLink, Parts, decode_parts, encode_parts};

/// Keys hash into this many groups; a group is the unit of placement (and,
/// later, of state snapshots and rescaling).
pub const KEY_GROUPS: u64 = 128;
const CHANNEL: usize = 16;
/// The hash seed is fixed so that a key's group never changes.
const KEY_HASH: RandomState = RandomState::with_seed(0x72756e6e656c);

/// A running view's tasks and its FLUSH handshake.
pub struct Dataflow {
    _tasks: JoinSet<()>,
    /// Where FLUSH asks each source input for a barrier (view inputs get
    /// theirs through the upstream view's feed).
    flush_requests: Vec<crate::connectors::FlushRequests>,
    /// Where the coordinator asks each source input for a checkpoint
    /// barrier.
    checkpoint_requests: Vec<CheckpointRequests>,
    /// Highest ticket the sink has seen pass (or `u64::MAX` once the input
    /// has ended), so FLUSH knows when everything before it is visible.
    flushed: watch::Receiver<u64>,
}

/// An input's message, tagged with the input; `None` when it has ended.
type InputMessage = (usize, Option<Result<Message>>);

/// Where a dataflow's tasks leave their state for an epoch until the sink
/// task, the last to see the barrier, reports it.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Collected>>);

#[derive(Default)]
struct Collected {
    by_epoch: BTreeMap<u64, Parts>,
    /// The last state of inputs that have ended: they pass no more
    /// barriers, and this stands for them in every later epoch.
    ended: Parts,
}

impl Collector {
    fn put(&self, epoch: u64, name: String, bytes: Vec<u8>) {
        if let Ok(mut m) = self.0.lock() {
            m.by_epoch.entry(epoch).or_default().insert(name, bytes);
        }
    }

    fn put_ended(&self, name: String, bytes: Vec<u8>) {
        if let Ok(mut m) = self.0.lock() {
            m.ended.insert(name, bytes);
        }
    }

    /// The parts of `epoch` (with those of ended inputs); older leftovers
    /// (an epoch the sink never saw) are dropped.
    fn take(&self, epoch: u64) -> Parts {
        let Ok(mut m) = self.0.lock() else {
            return Parts::new();
        };
        let later = m.by_epoch.split_off(&(epoch + 1));
        let mut parts = m.by_epoch.remove(&epoch).unwrap_or_default();
        m.by_epoch = later;
        for (name, bytes) in &m.ended {
            parts.entry(name.clone()).or_insert_with(|| bytes.clone());
        }
        parts
    }

    /// Snapshots `chain` into part `name` of `epoch`.
    fn snapshot(&self, epoch: u64, name: String, chain: &mut Chain) -> Result<()> {
        let state = chain.snapshot()?;
        self.put(epoch, name, encode_parts(&state)?);
        Ok(())
    }
}

/// What a dataflow restores from, by part name.
struct Restore(Parts);

impl Restore {
    fn lists(&self, name: &str) -> Result<Option<Vec<Vec<RecordBatch>>>> {
        self.0.get(name).map(|b| decode_parts(b, name)).transpose()
    }

    fn chain(&self, name: &str, chain: &mut Chain) -> Result<()> {
        match self.lists(name)? {
            Some(state) => chain.restore(state),
            None => Err(crate::internal!(
                "the checkpoint has no state for part {name} of this view"
            )),
        }
    }

    fn positions(&self, input: usize) -> Result<Option<SplitPositions>> {
        let name = format!("positions-{input}");
        self.0
            .get(&name)
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| crate::internal!("checkpoint part {name} cannot be read: {e}"))
            })
            .transpose()
    }

    fn instances(&self) -> usize {
        self.0.keys().filter(|k| k.starts_with("instance-")).count()
    }

    fn is_final(&self) -> bool {
        self.0.contains_key("final")
    }
}

/// A view's rows and figures as a part.
fn contents_part(contents: &ViewContents) -> Result<Vec<u8>> {
    encode_parts(&[contents.checkpoint_state()?])
}

impl Dataflow {
    /// Starts the tasks of `plan`, publishing into `contents`.
    /// With a checkpoint to restore in `link`, every task starts from its
    /// part and source inputs continue from the recorded positions.
    pub fn spawn(
        plan: StreamPlan,
        contents: Arc<ViewContents>,
        parallelism: usize,
        link: CheckpointLink,
    ) -> Result<Self> {
        let restore = link.take_restore().map(Restore);
        if let Some(r) = &restore {
            let mut state = r
                .lists("contents")?
                .ok_or_else(|| crate::internal!("the checkpoint has no rows for this view"))?;
            contents.restore_state(state.pop().unwrap_or_default())?;
            if let Some(bytes) = r.0.get("rows_in")
                && let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice())
            {
                contents
                    .rows_in
                    .store(u64::from_le_bytes(bytes), Ordering::Relaxed);
            }
            if r.is_final() {
                return Ok(Self::finished(contents, link, r));
            }
        }
        let collector = Collector::default();
        let mut tasks = JoinSet::new();
        let inputs = plan.inputs.len();
        let (merge_tx, merge_rx) = mpsc::channel::<InputMessage>(CHANNEL);
        let mut flush_requests = Vec::new();
        let mut checkpoint_requests = Vec::new();
        for (i, input) in plan.inputs.into_iter().enumerate() {
            let mut chain = instantiate(&input.steps)?;
            if let Some(r) = &restore {
                r.chain(&format!("input-{i}"), &mut chain)?;
            }
            let tx = merge_tx.clone();
            match input.input {
                Input::Source(source) => {
                    let positions = match &restore {
                        Some(r) => r.positions(i)?,
                        None => None,
                    };
                    let reader = source.open_reader_at(positions.as_ref())?;
                    flush_requests.push(reader.flush_requests());
                    let requests = reader.checkpoint_requests();
                    checkpoint_requests.push(requests.clone());
                    let cp = InputCheckpoint {
                        index: i,
                        collector: collector.clone(),
                        requests: Some(requests),
                    };
                    let link = link.clone();
                    tasks.spawn(async move {
                        link.wait_started().await;
                        run_source_input(reader, chain, tx, cp).await
                    });
                }
                Input::View {
                    name,
                    contents: upstream,
                } => {
                    let mut attachment = upstream.attach()?;
                    if restore.is_some() {
                        // The restored state already holds the upstream's
                        // rows up to the checkpoint; only changes follow.
                        attachment.snapshot = Arc::new(Vec::new());
                    }
                    let weighted = upstream
                        .is_updating()
                        .then(|| changelog::with_weight(upstream.schema()));
                    let cp = InputCheckpoint {
                        index: i,
                        collector: collector.clone(),
                        requests: None,
                    };
                    tasks.spawn(run_view_input(name, attachment, weighted, chain, tx, cp));
                }
            }
        }
        drop(merge_tx);
        let mut pre = instantiate(&plan.pre)?;
        if let Some(r) = &restore {
            r.chain("pre", &mut pre)?;
        }
        let (sink_tx, sink_rx) = mpsc::channel::<(usize, Option<Message>)>(CHANNEL);
        let (flushed_tx, flushed) = watch::channel(0u64);
        let restored_instances = restore.as_ref().map_or(0, Restore::instances);
        let instances = match &plan.keyed {
            // A checkpoint's key groups stay with the instances that wrote
            // them: the restored view keeps the parallelism it had.
            Some(_) if restored_instances > 0 => restored_instances,
            Some(k) if !k.key_exprs.is_empty() => parallelism.max(1),
            Some(_) => 1,
            None => 0,
        };
        let metrics = Arc::new(Mutex::new(vec![
            OperatorMetrics::default();
            instances.max(1)
        ]));
        let mut instance_txs = Vec::new();
        if let Some(keyed) = &plan.keyed {
            for i in 0..instances {
                let (tx, rx) = mpsc::channel::<Message>(CHANNEL);
                instance_txs.push(tx);
                let mut chain = instantiate(&keyed.steps)?;
                if let Some(r) = &restore {
                    r.chain(&format!("instance-{i}"), &mut chain)?;
                }
                let sink_tx = sink_tx.clone();
                let metrics = metrics.clone();
                let contents = contents.clone();
                let collector = collector.clone();
                tasks.spawn(async move {
                    if let Err(e) = run_instance(i, chain, rx, sink_tx, metrics, collector).await {
                        fail(&contents, &e);
                    }
                });
            }
        }
        let key_exprs = plan
            .keyed
            .as_ref()
            .map(|k| k.key_exprs.clone())
            .unwrap_or_default();
        let ingest_contents = contents.clone();
        let ingest_collector = collector.clone();
        tasks.spawn(async move {
            let route = Route {
                pre,
                key_exprs,
                instances: instance_txs,
                sink: sink_tx,
                hashes: Vec::new(),
                out: Vec::new(),
            };
            let ended = run_ingest(inputs, merge_rx, route, &ingest_contents, &ingest_collector);
            if let Err(e) = ended.await {
                fail(&ingest_contents, &e);
            }
        });
        let sink_inputs = instances.max(1);
        tasks.spawn(async move {
            run_sink(
                sink_inputs,
                sink_rx,
                contents,
                metrics,
                flushed_tx,
                collector,
                link,
            )
            .await;
        });
        Ok(Dataflow {
            _tasks: tasks,
            flush_requests,
            checkpoint_requests,
            flushed,
        })
    }

    /// A view whose input had ended at the checkpoint: its rows are back,
    /// nothing runs, and every later checkpoint holds the same state.
    fn finished(contents: Arc<ViewContents>, link: CheckpointLink, restore: &Restore) -> Self {
        contents.set_state("finished");
        link.report_final(restore.0.clone());
        let (_, flushed) = watch::channel(u64::MAX);
        Dataflow {
            _tasks: JoinSet::new(),
            flush_requests: Vec::new(),
            checkpoint_requests: Vec::new(),
            flushed,
        }
    }

    /// Asks every source input for the barrier of checkpoint `epoch` (view
    /// inputs get theirs through the upstream view's feed). Returns whether
    /// the dataflow reads any source directly.
    pub fn request_checkpoint(&self, epoch: u64) -> bool {
        for r in &self.checkpoint_requests {
            r.request(epoch);
        }
        !self.checkpoint_requests.is_empty()
    }

    /// Asks every source input for a FLUSH barrier after everything
    /// available now.
    pub fn request_flush(&self, ticket: u64) {
        for r in &self.flush_requests {
            r.request(ticket);
        }
    }

    /// Waits until FLUSH `ticket` has passed into the view (or the input
    /// ended).
    pub async fn wait_flushed(&self, ticket: u64) -> Result<()> {
        let mut flushed = self.flushed.clone();
        flushed
            .wait_for(|t| *t >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| Error::Canceled("the view stopped before FLUSH completed"))
    }

    /// Both of the above.
    pub async fn flush(&self, ticket: u64) -> Result<()> {
        self.request_flush(ticket);
        self.wait_flushed(ticket).await
    }
}

fn instantiate(steps: &[Step]) -> Result<Chain> {
    Ok(Chain::new(
        steps
            .iter()
            .map(Step::instantiate)
            .collect::<Result<Vec<_>>>()?,
    ))
}

/// Records the first failure; the others (tasks stopping because a
/// neighbour failed) add nothing.
fn fail(contents: &ViewContents, e: &Error) {
    if matches!(e, Error::Canceled(_)) || contents.state().starts_with("failed") {
        return;
    }
    tracing::error!("materialized view failed: {e}");
    contents.set_state(format!("failed: {e}"));
}

/// What an input task does at a checkpoint barrier.
struct InputCheckpoint {
    index: usize,
    collector: Collector,
    /// A source input's reader, which recorded its positions.
    requests: Option<CheckpointRequests>,
}

impl InputCheckpoint {
    /// The input has ended: its last state (and a source's final
    /// positions) stand for it in every later checkpoint.
    fn ended(&self, chain: &mut Chain) -> Result<()> {
        let state = encode_parts(&chain.snapshot()?)?;
        self.collector
            .put_ended(format!("input-{}", self.index), state);
        if let Some(r) = &self.requests {
            let positions = r.take_positions(u64::MAX).ok_or_else(|| {
                crate::internal!("a source reader ended without its final positions")
            })?;
            let json = serde_json::to_vec(&positions)
                .map_err(|e| crate::internal!("encoding source positions: {e}"))?;
            self.collector
                .put_ended(format!("positions-{}", self.index), json);
        }
        Ok(())
    }

    /// Sends the end of the input to the merge, after recording its state.
    async fn end(&self, chain: &mut Chain, tx: &mpsc::Sender<InputMessage>) {
        let message = match self.ended(chain) {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        };
        let _ = tx.send((self.index, message)).await;
    }

    fn take(&self, epoch: u64, chain: &mut Chain) -> Result<()> {
        self.collector
            .snapshot(epoch, format!("input-{}", self.index), chain)?;
        if let Some(r) = &self.requests {
            let positions = r.take_positions(epoch).ok_or_else(|| {
                crate::internal!("a source reader passed checkpoint {epoch} without its positions")
            })?;
            let json = serde_json::to_vec(&positions)
                .map_err(|e| crate::internal!("encoding source positions: {e}"))?;
            self.collector
                .put(epoch, format!("positions-{}", self.index), json);
        }
        Ok(())
    }
}

/// Runs one input's own steps and hands its messages to the merge.
async fn run_source_input(
    mut reader: crate::connectors::SourceReader,
    mut chain: Chain,
    tx: mpsc::Sender<InputMessage>,
    cp: InputCheckpoint,
) {
    let mut out = Vec::new();
    while let Some(message) = reader.next().await {
        if forward_input(message, &mut chain, &mut out, &tx, &cp)
            .await
            .is_err()
        {
            return;
        }
    }
    cp.end(&mut chain, &tx).await;
}

/// Reads another view: its snapshot (as inserts when it is updating), its
/// watermark, then its changes.
async fn run_view_input(
    name: String,
    attachment: Attachment,
    weighted: Option<SchemaRef>,
    mut chain: Chain,
    tx: mpsc::Sender<InputMessage>,
    cp: InputCheckpoint,
) {
    let index = cp.index;
    let mut out = Vec::new();
    let Attachment {
        snapshot,
        watermark,
        state,
        mut feed,
    } = attachment;
    for batch in snapshot.iter() {
        let batch = match &weighted {
            Some(schema) => changelog::as_inserts(batch, schema.clone()),
            None => Ok(batch.clone()),
        };
        if forward_input(batch.map(Message::Data), &mut chain, &mut out, &tx, &cp)
            .await
            .is_err()
        {
            return;
        }
    }
    if watermark > EventTime::MIN
        && forward_input(
            Ok(Message::Watermark(watermark)),
            &mut chain,
            &mut out,
            &tx,
            &cp,
        )
        .await
        .is_err()
    {
        return;
    }
    let upstream_failed = |reason: &str| Error::Data {
        sqlstate: "XX000",
        message: format!("materialized view \"{name}\", which this view reads, failed: {reason}"),
    };
    if let Some(reason) = state.strip_prefix("failed: ") {
        let _ = tx.send((index, Some(Err(upstream_failed(reason))))).await;
        return;
    }
    if state == "running" {
        while let Some(event) = feed.recv().await {
            let message = match event {
                ViewEvent::Data(b) => Ok(Message::Data(b)),
                ViewEvent::Watermark(w) => Ok(Message::Watermark(w)),
                ViewEvent::Flush(t) => Ok(Message::Barrier(Barrier {
                    epoch: t,
                    kind: BarrierKind::Flush(t),
                })),
                ViewEvent::Checkpoint(epoch) => Ok(Message::Barrier(Barrier {
                    epoch,
                    kind: BarrierKind::Checkpoint,
                })),
                ViewEvent::End => break,
                ViewEvent::Failed(reason) => Err(upstream_failed(&reason)),
            };
            if forward_input(message, &mut chain, &mut out, &tx, &cp)
                .await
                .is_err()
            {
                return;
            }
        }
    }
    cp.end(&mut chain, &tx).await;
}

/// Passes one message through an input's chain to the merge. An error is
/// handed on (and ends the input); `Err(())` means stop.
async fn forward_input(
    message: Result<Message>,
    chain: &mut Chain,
    out: &mut Vec<Message>,
    tx: &mpsc::Sender<InputMessage>,
    cp: &InputCheckpoint,
) -> std::result::Result<(), ()> {
    let index = cp.index;
    out.clear();
    let mut pushed = message.and_then(|m| chain.push(m, out));
    if pushed.is_ok()
        && let Some(epoch) = out.iter().find_map(checkpoint_epoch)
    {
        pushed = cp.take(epoch, chain);
    }
    if let Err(e) = pushed {
        let _ = tx.send((index, Some(Err(e)))).await;
        return Err(());
    }
    for m in out.drain(..) {
        tx.send((index, Some(Ok(m)))).await.map_err(|_| ())?;
    }
    Ok(())
}

fn checkpoint_epoch(m: &Message) -> Option<u64> {
    match m {
        Message::Barrier(b) if b.kind == BarrierKind::Checkpoint => Some(b.epoch),
        _ => None,
    }
}

/// The steps after the merge and the exchange to the instances.
struct Route {
    pre: Chain,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    instances: Vec<mpsc::Sender<Message>>,
    sink: mpsc::Sender<(usize, Option<Message>)>,
    hashes: Vec<u64>,
    out: Vec<Message>,
}

impl Route {
    async fn send(&mut self, message: Message) -> Result<()> {
        self.out.clear();
        self.pre.push(message, &mut self.out)?;
        for m in std::mem::take(&mut self.out) {
            if self.instances.is_empty() {
                self.sink.send((0, Some(m))).await.map_err(|_| stopped())?;
                continue;
            }
            match m {
                Message::Data(batch) if self.instances.len() > 1 => {
                    let parts = partition(
                        &batch,
                        &self.key_exprs,
                        self.instances.len(),
                        &mut self.hashes,
                    )?;
                    for (i, part) in parts.into_iter().enumerate() {
                        if let Some(part) = part {
                            self.instances[i]
                                .send(Message::Data(part))
                                .await
                                .map_err(|_| stopped())?;
                        }
                    }
                }
                other => {
                    for tx in &self.instances {
                        tx.send(other.clone()).await.map_err(|_| stopped())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Merges the inputs (UNION ALL): rows as they come, the minimum watermark
/// over the inputs still running, a FLUSH ticket once every running input
/// has passed it, and checkpoint barriers aligned.
async fn run_ingest(
    inputs: usize,
    mut rx: mpsc::Receiver<InputMessage>,
    mut route: Route,
    contents: &ViewContents,
    collector: &Collector,
) -> Result<()> {
    let mut aligner = Aligner::new(inputs);
    let mut watermarks: Vec<Option<EventTime>> = vec![None; inputs];
    let mut tickets: Vec<u64> = vec![0; inputs];
    let mut emitted: Option<EventTime> = None;
    let mut passed = 0u64;
    loop {
        while let Some(next) = aligner.pop() {
            match next {
                Aligned::Message(_, Message::Data(b)) => {
                    contents
                        .rows_in
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    route.send(Message::Data(b)).await?;
                    continue;
                }
                Aligned::Message(input, Message::Watermark(w)) => watermarks[input] = Some(w),
                Aligned::Message(input, Message::Barrier(b)) => match b.kind {
                    BarrierKind::Flush(t) => tickets[input] = tickets[input].max(t),
                    _ => {
                        route.send(Message::Barrier(b)).await?;
                        continue;
                    }
                },
                Aligned::Ended => {}
                Aligned::Barrier(b) => {
                    collector.snapshot(b.epoch, "pre".into(), &mut route.pre)?;
                    // The rows counted in before the barrier, not those the
                    // sink task sees counted by the time it takes the rest.
                    let rows_in = contents.rows_in.load(Ordering::Relaxed);
                    collector.put(b.epoch, "rows_in".into(), rows_in.to_le_bytes().to_vec());
                    route.send(Message::Barrier(b)).await?;
                    continue;
                }
            }
            let running: Vec<usize> = (0..inputs).filter(|i| !aligner.is_ended(*i)).collect();
            if running.is_empty() {
                break;
            }
            let min_wm = running
                .iter()
                .map(|i| watermarks[*i])
                .collect::<Option<Vec<_>>>()
                .and_then(|w| w.into_iter().min());
            if let Some(w) = min_wm
                && emitted.is_none_or(|e| w > e)
            {
                emitted = Some(w);
                route.send(Message::Watermark(w)).await?;
            }
            let min_ticket = running.iter().map(|i| tickets[*i]).min().unwrap_or(0);
            if min_ticket > passed {
                passed = min_ticket;
                route
                    .send(Message::Barrier(Barrier {
                        epoch: passed,
                        kind: BarrierKind::Flush(passed),
                    }))
                    .await?;
            }
        }
        if aligner.all_ended() {
            break;
        }
        match rx.recv().await {
            Some((_, Some(Err(e)))) => return Err(e),
            Some((input, Some(Ok(m)))) => aligner.push(input, Some(m)),
            Some((input, None)) => aligner.push(input, None),
            None => break,
        }
    }
    // Every input has ended: tell the instances (or the sink) so.
    if route.instances.is_empty() {
        let _ = route.sink.send((0, None)).await;
    }
    Ok(())
}

fn stopped() -> Error {
    Error::Canceled("the view's dataflow stopped")
}

/// Splits `batch` by the key group of each row's key.
fn partition(
    batch: &RecordBatch,
    key_exprs: &[Arc<dyn PhysicalExpr>],
    instances: usize,
    hashes: &mut Vec<u64>,
) -> Result<Vec<Option<RecordBatch>>> {
    let rows = batch.num_rows();
    let keys = key_exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(rows))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    hashes.clear();
    hashes.resize(rows, 0);
    create_hashes(&keys, &KEY_HASH, hashes)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); instances];
    for (row, h) in hashes.iter().enumerate() {
        let group = h % KEY_GROUPS;
        let instance = (group as usize * instances) / KEY_GROUPS as usize;
        indices[instance].push(row as u32);
    }
    indices
        .into_iter()
        .map(|idx| {
            if idx.is_empty() {
                Ok(None)
            } else if idx.len() == rows {
                Ok(Some(batch.clone()))
            } else {
                Ok(Some(take_record_batch(batch, &UInt32Array::from(idx))?))
            }
        })
        .collect()
}

async fn run_instance(
    index: usize,
    mut chain: Chain,
    mut rx: mpsc::Receiver<Message>,
    sink: mpsc::Sender<(usize, Option<Message>)>,
    metrics: Arc<Mutex<Vec<OperatorMetrics>>>,
    collector: Collector,
) -> Result<()> {
    let mut out = Vec::new();
    while let Some(message) = rx.recv().await {
        // Figures refresh when time moves or a barrier passes, before the
        // message reaches the sink (so FLUSH shows current ones).
        let refresh = !matches!(message, Message::Data(_));
        let checkpoint = checkpoint_epoch(&message);
        out.clear();
        chain.push(message, &mut out)?;
        if let Some(epoch) = checkpoint {
            collector.snapshot(epoch, format!("instance-{index}"), &mut chain)?;
        }
        if refresh && let Ok(mut slots) = metrics.lock() {
            slots[index] = chain.metrics();
        }
        for m in out.drain(..) {
            sink.send((index, Some(m))).await.map_err(|_| stopped())?;
        }
    }
    if let Ok(mut slots) = metrics.lock() {
        slots[index] = chain.metrics();
    }
    let _ = sink.send((index, None)).await;
    Ok(())
}

async fn run_sink(
    inputs: usize,
    mut rx: mpsc::Receiver<(usize, Option<Message>)>,
    contents: Arc<ViewContents>,
    metrics: Arc<Mutex<Vec<OperatorMetrics>>>,
    flushed: watch::Sender<u64>,
    collector: Collector,
    link: CheckpointLink,
) {
    let mut aligner = Aligner::new(inputs);
    let mut watermarks: Vec<Option<EventTime>> = vec![None; inputs];
    let mut flush_seen: Vec<u64> = vec![0; inputs];
    'run: loop {
        while let Some(next) = aligner.pop() {
            match next {
                Aligned::Message(_, Message::Data(batch)) => match contents.append(batch) {
                    Ok(delivery) => delivery.deliver().await,
                    Err(e) => {
                        fail(&contents, &e);
                        break 'run;
                    }
                },
                Aligned::Message(input, Message::Watermark(wm)) => {
                    watermarks[input] = Some(wm);
                    if let Some(min) = watermarks.iter().copied().collect::<Option<Vec<_>>>()
                        && let Some(min) = min.into_iter().min()
                    {
                        contents.advance_watermark(min).deliver().await;
                    }
                    publish_metrics(&contents, &metrics);
                }
                Aligned::Message(input, Message::Barrier(b)) => {
                    publish_metrics(&contents, &metrics);
                    if let BarrierKind::Flush(ticket) = b.kind {
                        flush_seen[input] = flush_seen[input].max(ticket);
                        // Aligned: the ticket has passed once every input
                        // has delivered it.
                        let passed = flush_seen.iter().copied().min().unwrap_or(0);
                        if passed > *flushed.borrow() {
                            contents.flush_passed(passed).deliver().await;
                            flushed.send_replace(passed);
                        }
                    }
                }
                Aligned::Ended => {}
                Aligned::Barrier(b) => {
                    let mut parts = collector.take(b.epoch);
                    match contents_part(&contents) {
                        Ok(rows) => {
                            parts.insert("contents".into(), rows);
                            link.report_epoch(b.epoch, parts);
                        }
                        Err(e) => {
                            fail(&contents, &e);
                            break 'run;
                        }
                    }
                    contents.checkpoint_passed(b.epoch).deliver().await;
                }
            }
        }
        if aligner.all_ended() {
            break;
        }
        match rx.recv().await {
            Some((input, message)) => aligner.push(input, message),
            None => break,
        }
    }
    publish_metrics(&contents, &metrics);
    let failed = contents.state().starts_with("failed") || !aligner.all_ended();
    if failed {
        if !contents.state().starts_with("failed") {
            contents.set_state("failed: the view's dataflow stopped");
        }
        link.report_failed();
    } else {
        contents.set_state("finished");
        match contents_part(&contents) {
            Ok(rows) => {
                let mut parts = Parts::new();
                parts.insert("contents".into(), rows);
                parts.insert("final".into(), Vec::new());
                link.report_final(parts);
            }
            Err(_) => link.report_failed(),
        }
    }
    contents.close_feed().await;
    let _ = flushed.send(u64::MAX);
}

/// Shows the instances' summed operator figures on the view.
fn publish_metrics(contents: &ViewContents, metrics: &Mutex<Vec<OperatorMetrics>>) {
    if let Ok(m) = metrics.lock() {
        let mut sum = OperatorMetrics::default();
        for x in m.iter() {
            sum += *x;
        }
        contents.set_metrics(sum);
    }
}
