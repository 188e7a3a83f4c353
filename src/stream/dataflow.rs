//! [`Dataflow`]: a running materialized view — the tasks that read its
//! source, run its operators on every core, and publish its rows.
//!
//! Shape: one ingest task reads the source and runs the stateless steps;
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
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{BarrierKind, Chain, EventTime, Message, OperatorMetrics};
use crate::error::{Error, Result};
use crate::operators::ViewContents;
use crate::planner::{Step, StreamPlan};

/// Keys hash into this many groups; a group is the unit of placement (and,
/// later, of state snapshots and rescaling).
pub const KEY_GROUPS: u64 = 128;
const CHANNEL: usize = 16;
/// The hash seed is fixed so that a key's group never changes.
const KEY_HASH: RandomState = RandomState::with_seed(0x72756e6e656c);

/// A running view's tasks and its FLUSH handshake.
pub struct Dataflow {
    _tasks: JoinSet<()>,
    /// Where FLUSH asks the source for a barrier.
    flush_requests: crate::connectors::FlushRequests,
    /// Highest ticket the sink has seen pass (or `u64::MAX` once the input
    /// has ended), so FLUSH knows when everything before it is visible.
    flushed: watch::Receiver<u64>,
}

impl Dataflow {
    /// Starts the tasks of `plan`, publishing into `contents`.
    pub fn spawn(
        plan: StreamPlan,
        contents: Arc<ViewContents>,
        parallelism: usize,
    ) -> Result<Self> {
        let mut tasks = JoinSet::new();
        let reader = plan.source.open_reader()?;
        let flush_requests = reader.flush_requests();
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
            let outcome = run_ingest(
                reader,
                pre,
                key_exprs,
                instance_txs,
                sink_tx.clone(),
                &ingest_contents,
            )
            .await;
            if let Err(e) = outcome {
                fail(&ingest_contents, &e);
            }
        });
        let inputs = instances.max(1);
        tasks.spawn(async move {
            run_sink(inputs, sink_rx, contents, metrics, flushed_tx).await;
        });
        Ok(Dataflow {
            _tasks: tasks,
            flush_requests,
            flushed,
        })
    }

    /// Asks the source for a FLUSH barrier after everything available now
    /// and waits until it has passed into the view (or the input ended).
    pub async fn flush(&self, ticket: u64) -> Result<()> {
        self.flush_requests.request(ticket);
        let mut flushed = self.flushed.clone();
        flushed
            .wait_for(|t| *t >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| Error::Canceled("the view stopped before FLUSH completed"))
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

async fn run_ingest(
    mut reader: crate::connectors::SourceReader,
    mut pre: Chain,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    instances: Vec<mpsc::Sender<Message>>,
    sink: mpsc::Sender<(usize, Message)>,
    contents: &ViewContents,
) -> Result<()> {
    let mut out = Vec::new();
    let mut hashes = Vec::new();
    while let Some(message) = reader.next().await {
        let message = message?;
        if let Message::Data(b) = &message {
            contents
                .rows_in
                .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
        out.clear();
        pre.push(message, &mut out)?;
        for m in out.drain(..) {
            if instances.is_empty() {
                sink.send((0, m)).await.map_err(|_| stopped())?;
                continue;
            }
            match m {
                Message::Data(batch) if instances.len() > 1 => {
                    for (i, part) in partition(&batch, &key_exprs, instances.len(), &mut hashes)?
                        .into_iter()
                        .enumerate()
                    {
                        if let Some(part) = part {
                            instances[i]
                                .send(Message::Data(part))
                                .await
                                .map_err(|_| stopped())?;
                        }
                    }
                }
                other => {
                    for tx in &instances {
                        tx.send(other.clone()).await.map_err(|_| stopped())?;
                    }
                }
            }
        }
    }
    // The input has ended: every input of the sink sees the channel close.
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
        let is_watermark = matches!(message, Message::Watermark(_));
        out.clear();
        chain.push(message, &mut out)?;
        for m in out.drain(..) {
            sink.send((index, m)).await.map_err(|_| stopped())?;
        }
        if is_watermark && let Ok(mut slots) = metrics.lock() {
            slots[index] = chain.metrics();
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
            Message::Data(batch) => {
                if let Err(e) = contents.append(vec![batch]) {
                    fail(&contents, &e);
                    return;
                }
            }
            Message::Watermark(wm) => {
                watermarks[input] = Some(wm);
                if let Some(min) = watermarks.iter().copied().collect::<Option<Vec<_>>>()
                    && let Some(min) = min.into_iter().min()
                {
                    contents.watermark.fetch_max(min, Ordering::Relaxed);
                }
                publish_metrics(&contents, &metrics);
            }
            Message::Barrier(b) => {
                if let BarrierKind::Flush(ticket) = b.kind {
                    flush_seen[input] = flush_seen[input].max(ticket);
                    // Aligned: the ticket has passed once every input has
                    // delivered it.
                    let passed = flush_seen.iter().copied().min().unwrap_or(0);
                    flushed.send_if_modified(|t| {
                        let grow = passed > *t;
                        if grow {
                            *t = passed;
                        }
                        grow
                    });
                }
            }
        }
    }
    publish_metrics(&contents, &metrics);
    if !contents.state().starts_with("failed") {
        contents.set_state("finished");
    }
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
