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

use super::{Barrier, BarrierKind, Chain, EventTime, Message, OperatorMetrics, changelog};
use crate::error::{Error, Result};
use crate::operators::{Attachment, ViewContents, ViewEvent};
use crate::planner::{Input, Step, StreamPlan};

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
    /// Highest ticket the sink has seen pass (or `u64::MAX` once the input
    /// has ended), so FLUSH knows when everything before it is visible.
    flushed: watch::Receiver<u64>,
}

/// An input's message, tagged with the input; `None` when it has ended.
type InputMessage = (usize, Option<Result<Message>>);

impl Dataflow {
    /// Starts the tasks of `plan`, publishing into `contents`.
    pub fn spawn(
        plan: StreamPlan,
        contents: Arc<ViewContents>,
        parallelism: usize,
    ) -> Result<Self> {
        let mut tasks = JoinSet::new();
        let inputs = plan.inputs.len();
        let (merge_tx, merge_rx) = mpsc::channel::<InputMessage>(CHANNEL);
        let mut flush_requests = Vec::new();
        for (i, input) in plan.inputs.into_iter().enumerate() {
            let chain = instantiate(&input.steps)?;
            let tx = merge_tx.clone();
            match input.input {
                Input::Source(source) => {
                    let reader = source.open_reader()?;
                    flush_requests.push(reader.flush_requests());
                    tasks.spawn(run_source_input(i, reader, chain, tx));
                }
                Input::View {
                    name,
                    contents: upstream,
                } => {
                    let attachment = upstream.attach()?;
                    let weighted = upstream
                        .is_updating()
                        .then(|| changelog::with_weight(upstream.schema()));
                    tasks.spawn(run_view_input(i, name, attachment, weighted, chain, tx));
                }
            }
        }
        drop(merge_tx);
        let pre = instantiate(&plan.pre)?;
        let (sink_tx, sink_rx) = mpsc::channel::<(usize, Message)>(CHANNEL);
        let (flushed_tx, flushed) = watch::channel(0u64);
        let instances = match &plan.keyed {
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
                let chain = instantiate(&keyed.steps)?;
                let sink_tx = sink_tx.clone();
                let metrics = metrics.clone();
                let contents = contents.clone();
                tasks.spawn(async move {
                    if let Err(e) = run_instance(i, chain, rx, sink_tx, metrics).await {
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
        tasks.spawn(async move {
            let route = Route {
                pre,
                key_exprs,
                instances: instance_txs,
                sink: sink_tx,
                hashes: Vec::new(),
                out: Vec::new(),
            };
            if let Err(e) = run_ingest(inputs, merge_rx, route, &ingest_contents).await {
                fail(&ingest_contents, &e);
            }
        });
        let sink_inputs = instances.max(1);
        tasks.spawn(async move {
            run_sink(sink_inputs, sink_rx, contents, metrics, flushed_tx).await;
        });
        Ok(Dataflow {
            _tasks: tasks,
            flush_requests,
            flushed,
        })
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

/// Runs one input's own steps and hands its messages to the merge.
async fn run_source_input(
    index: usize,
    mut reader: crate::connectors::SourceReader,
    mut chain: Chain,
    tx: mpsc::Sender<InputMessage>,
) {
    let mut out = Vec::new();
    while let Some(message) = reader.next().await {
        if forward_input(index, message, &mut chain, &mut out, &tx)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = tx.send((index, None)).await;
}

/// Reads another view: its snapshot (as inserts when it is updating), its
/// watermark, then its changes.
async fn run_view_input(
    index: usize,
    name: String,
    attachment: Attachment,
    weighted: Option<SchemaRef>,
    mut chain: Chain,
    tx: mpsc::Sender<InputMessage>,
) {
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
        if forward_input(index, batch.map(Message::Data), &mut chain, &mut out, &tx)
            .await
            .is_err()
        {
            return;
        }
    }
    if watermark > EventTime::MIN
        && forward_input(
            index,
            Ok(Message::Watermark(watermark)),
            &mut chain,
            &mut out,
            &tx,
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
                ViewEvent::End => break,
                ViewEvent::Failed(reason) => Err(upstream_failed(&reason)),
            };
            if forward_input(index, message, &mut chain, &mut out, &tx)
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = tx.send((index, None)).await;
}

/// Passes one message through an input's chain to the merge. An error is
/// handed on (and ends the input); `Err(())` means stop.
async fn forward_input(
    index: usize,
    message: Result<Message>,
    chain: &mut Chain,
    out: &mut Vec<Message>,
    tx: &mpsc::Sender<InputMessage>,
) -> std::result::Result<(), ()> {
    out.clear();
    let pushed = message.and_then(|m| chain.push(m, out));
    if let Err(e) = pushed {
        let _ = tx.send((index, Some(Err(e)))).await;
        return Err(());
    }
    for m in out.drain(..) {
        tx.send((index, Some(Ok(m)))).await.map_err(|_| ())?;
    }
    Ok(())
}

/// The steps after the merge and the exchange to the instances.
struct Route {
    pre: Chain,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    instances: Vec<mpsc::Sender<Message>>,
    sink: mpsc::Sender<(usize, Message)>,
    hashes: Vec<u64>,
    out: Vec<Message>,
}

impl Route {
    async fn send(&mut self, message: Message) -> Result<()> {
        self.out.clear();
        self.pre.push(message, &mut self.out)?;
        for m in std::mem::take(&mut self.out) {
            if self.instances.is_empty() {
                self.sink.send((0, m)).await.map_err(|_| stopped())?;
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
/// over the inputs still running, and a FLUSH ticket once every running
/// input has passed it.
async fn run_ingest(
    inputs: usize,
    mut rx: mpsc::Receiver<InputMessage>,
    mut route: Route,
    contents: &ViewContents,
) -> Result<()> {
    let mut watermarks: Vec<Option<EventTime>> = vec![None; inputs];
    let mut tickets: Vec<u64> = vec![0; inputs];
    let mut ended = vec![false; inputs];
    let mut emitted: Option<EventTime> = None;
    let mut passed = 0u64;
    while let Some((input, message)) = rx.recv().await {
        match message {
            Some(Err(e)) => return Err(e),
            Some(Ok(Message::Data(b))) => {
                contents
                    .rows_in
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                route.send(Message::Data(b)).await?;
                continue;
            }
            Some(Ok(Message::Watermark(w))) => watermarks[input] = Some(w),
            Some(Ok(Message::Barrier(b))) => match b.kind {
                BarrierKind::Flush(t) => tickets[input] = tickets[input].max(t),
                _ => {
                    route.send(Message::Barrier(b)).await?;
                    continue;
                }
            },
            None => ended[input] = true,
        }
        let running: Vec<usize> = (0..inputs).filter(|i| !ended[*i]).collect();
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
    // Every input has ended: every input of the sink sees the channel close.
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
    sink: mpsc::Sender<(usize, Message)>,
    metrics: Arc<Mutex<Vec<OperatorMetrics>>>,
) -> Result<()> {
    let mut out = Vec::new();
    while let Some(message) = rx.recv().await {
        // Figures refresh when time moves or a barrier passes, before the
        // message reaches the sink (so FLUSH shows current ones).
        let refresh = !matches!(message, Message::Data(_));
        out.clear();
        chain.push(message, &mut out)?;
        if refresh && let Ok(mut slots) = metrics.lock() {
            slots[index] = chain.metrics();
        }
        for m in out.drain(..) {
            sink.send((index, m)).await.map_err(|_| stopped())?;
        }
    }
    if let Ok(mut slots) = metrics.lock() {
        slots[index] = chain.metrics();
    }
    Ok(())
}

async fn run_sink(
    inputs: usize,
    mut rx: mpsc::Receiver<(usize, Message)>,
    contents: Arc<ViewContents>,
    metrics: Arc<Mutex<Vec<OperatorMetrics>>>,
    flushed: watch::Sender<u64>,
) {
    let mut watermarks: Vec<Option<EventTime>> = vec![None; inputs];
    let mut flush_seen: Vec<u64> = vec![0; inputs];
    while let Some((input, message)) = rx.recv().await {
        match message {
            Message::Data(batch) => match contents.append(batch) {
                Ok(delivery) => delivery.deliver().await,
                Err(e) => {
                    fail(&contents, &e);
                    break;
                }
            },
            Message::Watermark(wm) => {
                watermarks[input] = Some(wm);
                if let Some(min) = watermarks.iter().copied().collect::<Option<Vec<_>>>()
                    && let Some(min) = min.into_iter().min()
                {
                    contents.advance_watermark(min).deliver().await;
                }
                publish_metrics(&contents, &metrics);
            }
            Message::Barrier(b) => {
                publish_metrics(&contents, &metrics);
                if let BarrierKind::Flush(ticket) = b.kind {
                    flush_seen[input] = flush_seen[input].max(ticket);
                    // Aligned: the ticket has passed once every input has
                    // delivered it.
                    let passed = flush_seen.iter().copied().min().unwrap_or(0);
                    if passed > *flushed.borrow() {
                        contents.flush_passed(passed).deliver().await;
                        flushed.send_replace(passed);
                    }
                }
            }
        }
    }
    publish_metrics(&contents, &metrics);
    if !contents.state().starts_with("failed") {
        contents.set_state("finished");
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
