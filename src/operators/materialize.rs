//! [`ViewContents`]: the rows of a materialized view, published as
//! immutable snapshots and as a change feed, and the `TableProvider` that
//! lets any SQL read them.
//!
//! An append-only view appends whole batches under a short lock by swapping
//! in a new `Arc<Vec<RecordBatch>>`. An updating view (docs/design/0005)
//! keeps a multiset of rows in Arrow's row format and rebuilds its snapshot
//! once per change, when a reader asks. Either way a reader takes an `Arc`
//! and scans it without blocking the dataflow, and sees every row of a
//! batch or none of it. Every applied batch, watermark and FLUSH ticket is
//! also published on a broadcast feed for SUBSCRIBE and views on views;
//! [`ViewContents::subscribe`] takes the snapshot and joins the feed under
//! the same lock, so the two never overlap or leave a gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, Int64Array, UInt64Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::{broadcast, mpsc};

use crate::error::{Error, Result};
use crate::stream::{EventTime, OperatorMetrics, changelog};

/// An append-only snapshot keeps at least this many batches before it
/// merges any (they are the scan's partitions).
const MIN_BATCHES: usize = 8;
/// How many feed events a subscriber may fall behind before it is ended.
const FEED_CAPACITY: usize = 4096;

/// What a view publishes, in the order it applied it.
#[derive(Debug, Clone)]
pub enum ViewEvent {
    /// Rows applied to the view; with a trailing `__weight` column when the
    /// view is updating.
    Data(RecordBatch),
    /// The view's watermark advanced.
    Watermark(EventTime),
    /// Every change before this FLUSH ticket has been applied.
    Flush(u64),
    /// The view's state for checkpoint `epoch` is taken after the changes
    /// before this event (attached dataflows and sinks only).
    Checkpoint(u64),
    /// The view's input ended: nothing more will change.
    End,
    /// The view's dataflow failed.
    Failed(Arc<str>),
}

/// What [`ViewContents::subscribe`] returns: the rows now, then the changes.
pub struct Subscription {
    /// The view's rows at the moment of subscribing (without weights).
    pub snapshot: Arc<Vec<RecordBatch>>,
    /// The view's watermark at that moment.
    pub watermark: EventTime,
    /// Whether the view had already ended or failed; the feed then carries
    /// nothing more.
    pub state: String,
    pub feed: broadcast::Receiver<ViewEvent>,
}

/// What [`ViewContents::attach`] returns to a downstream dataflow: like a
/// [`Subscription`], but the feed is bounded and applies backpressure to
/// this view's dataflow instead of dropping a slow reader.
pub struct Attachment {
    pub snapshot: Arc<Vec<RecordBatch>>,
    pub watermark: EventTime,
    pub state: String,
    pub feed: mpsc::Receiver<ViewEvent>,
}

/// An event to hand to the attached downstream dataflows, after the lock
/// it was applied under is released.
#[must_use = "downstream views see the event only once it is delivered"]
pub struct Delivery {
    to: Vec<mpsc::Sender<ViewEvent>>,
    event: Option<ViewEvent>,
}

impl Delivery {
    fn none() -> Self {
        Delivery {
            to: Vec::new(),
            event: None,
        }
    }

    /// Waits until every attached dataflow has queued the event; one that
    /// has stopped is skipped.
    pub async fn deliver(self) {
        let Some(event) = self.event else { return };
        for tx in self.to {
            let _ = tx.send(event.clone()).await;
        }
    }
}

/// The rows of a view, by kind.
enum Rows {
    Append(Arc<Vec<RecordBatch>>),
    Updating(Multiset),
    /// Rows are handed to attached dataflows but not kept: the private
    /// contents a sink's query publishes into (connectors::sinks).
    Passing,
}

/// An updating view's rows: Arrow row bytes of the full row -> count.
struct Multiset {
    converter: RowConverter,
    counts: HashMap<Box<[u8]>, i64>,
    /// The snapshot of `counts`, rebuilt after a change when read.
    cached: Option<Arc<Vec<RecordBatch>>>,
}

impl Multiset {
    fn apply(&mut self, batch: &RecordBatch) -> Result<(u64, u64)> {
        let weights = changelog::weights(batch)?;
        let columns = &batch.columns()[..batch.num_columns() - 1];
        let rows = self.converter.convert_columns(columns)?;
        for (i, w) in weights.values().iter().enumerate() {
            let key = rows.row(i);
            let key = key.as_ref();
            match self.counts.get_mut(key) {
                Some(c) => {
                    *c += w;
                    if *c == 0 {
                        self.counts.remove(key);
                    }
                }
                None => {
                    self.counts.insert(key.into(), *w);
                }
            }
        }
        self.cached = None;
        Ok(changelog::count_signs(weights))
    }

    fn snapshot(&mut self, schema: &SchemaRef) -> Result<Arc<Vec<RecordBatch>>> {
        if let Some(c) = &self.cached {
            return Ok(c.clone());
        }
        let parser = self.converter.parser();
        let mut rows = Vec::with_capacity(self.counts.len());
        for (bytes, count) in &self.counts {
            // A negative count is a delete whose insert has not arrived; it
            // is kept (so the insert cancels it) but not shown.
            for _ in 0..(*count).max(0) {
                rows.push(parser.parse(bytes));
            }
        }
        let batches = if rows.is_empty() {
            Vec::new()
        } else {
            let columns = self.converter.convert_rows(rows)?;
            vec![RecordBatch::try_new(schema.clone(), columns)?]
        };
        let snapshot = Arc::new(batches);
        self.cached = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// The live rows and figures of one materialized view.
pub struct ViewContents {
    /// The view's columns (never the weight column).
    schema: SchemaRef,
    rows: Mutex<Rows>,
    feed: broadcast::Sender<ViewEvent>,
    /// Dataflows of views defined on this one.
    downstream: Mutex<Vec<mpsc::Sender<ViewEvent>>>,
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// Rows deleted from an updating view.
    pub rows_deleted: AtomicU64,
    /// The view's watermark (µs); `EventTime::MIN` before any.
    pub watermark: AtomicI64,
    /// Operator figures, refreshed by the dataflow.
    metrics: Mutex<OperatorMetrics>,
    /// `running`, `finished` (a finite input fully read) or `failed: ...`.
    state: Mutex<String>,
    /// The operator graph, for EXPLAIN.
    pub graph: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ViewContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewContents")
            .field("schema", &self.schema)
            .field("updating", &self.is_updating())
            .finish()
    }
}

impl ViewContents {
    /// The contents of an append-only view.
    pub fn new(schema: SchemaRef) -> Self {
        Self::with_rows(schema, Rows::Append(Arc::new(Vec::new())))
    }

    /// Contents that keep no rows and only hand them on to what is
    /// attached: the output of a `CREATE SINK ... AS SELECT` query.
    pub fn new_passing(schema: SchemaRef) -> Self {
        Self::with_rows(schema, Rows::Passing)
    }

    /// The contents of an updating view; fails with 0A000 for column types
    /// Arrow's row format cannot key.
    pub fn try_new_updating(schema: SchemaRef) -> Result<Self> {
        let fields: Vec<SortField> = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        if !RowConverter::supports_fields(&fields) {
            return Err(Error::Unsupported(format!(
                "an updating materialized view with these column types: {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let multiset = Multiset {
            converter: RowConverter::new(fields)?,
            counts: HashMap::new(),
            cached: None,
        };
        Ok(Self::with_rows(schema, Rows::Updating(multiset)))
    }

    fn with_rows(schema: SchemaRef, rows: Rows) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        ViewContents {
            schema,
            rows: Mutex::new(rows),
            feed,
            downstream: Mutex::new(Vec::new()),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            rows_deleted: AtomicU64::new(0),
            watermark: AtomicI64::new(EventTime::MIN),
            metrics: Mutex::new(OperatorMetrics::default()),
            state: Mutex::new("running".into()),
            graph: Mutex::new(Vec::new()),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Whether the view's rows change (its feed carries weights).
    pub fn is_updating(&self) -> bool {
        self.rows
            .lock()
            .map(|r| matches!(*r, Rows::Updating(_)))
            .unwrap_or(false)
    }

    fn rows(&self) -> Result<std::sync::MutexGuard<'_, Rows>> {
        self.rows
            .lock()
            .map_err(|_| crate::internal!("view rows lock poisoned"))
    }

    /// Applies one batch as one unit: appended rows, or (for an updating
    /// view) a changelog batch with weights.
    pub fn append(&self, batch: RecordBatch) -> Result<Delivery> {
        if batch.num_rows() == 0 {
            return Ok(Delivery::none());
        }
        let mut rows = self.rows()?;
        match &mut *rows {
            Rows::Append(snapshot) => {
                let mut next: Vec<RecordBatch> = snapshot.as_ref().clone();
                next.push(batch.clone());
                merge_tail(&mut next, &self.schema)?;
                *snapshot = Arc::new(next);
                self.rows_out
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            Rows::Updating(m) => {
                let (ins, del) = m.apply(&batch)?;
                self.rows_out.fetch_add(ins, Ordering::Relaxed);
                self.rows_deleted.fetch_add(del, Ordering::Relaxed);
            }
            Rows::Passing => {
                self.rows_out
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
        }
        // Sent under the lock: a subscriber sees this batch either in its
        // snapshot or on its feed, never both.
        Ok(self.publish(ViewEvent::Data(batch)))
    }

    /// Sends `event` to subscribers now and returns it for the attached
    /// dataflows. Called with the rows lock held.
    fn publish(&self, event: ViewEvent) -> Delivery {
        let _ = self.feed.send(event.clone());
        self.to_downstream(event)
    }

    /// `event` for the attached dataflows only.
    fn to_downstream(&self, event: ViewEvent) -> Delivery {
        let to = self
            .downstream
            .lock()
            .map(|mut d| {
                d.retain(|tx| !tx.is_closed());
                d.clone()
            })
            .unwrap_or_default();
        Delivery {
            to,
            event: Some(event),
        }
    }

    /// Raises the view's watermark; publishes it when it moved.
    pub fn advance_watermark(&self, watermark: EventTime) -> Delivery {
        let Ok(_rows) = self.rows() else {
            return Delivery::none();
        };
        let before = self.watermark.fetch_max(watermark, Ordering::Relaxed);
        if watermark > before {
            self.publish(ViewEvent::Watermark(watermark))
        } else {
            Delivery::none()
        }
    }

    /// Every change before FLUSH `ticket` is applied.
    pub fn flush_passed(&self, ticket: u64) -> Delivery {
        let Ok(_rows) = self.rows() else {
            return Delivery::none();
        };
        self.publish(ViewEvent::Flush(ticket))
    }

    /// The view's checkpoint barrier has passed: attached dataflows take
    /// theirs at the same point of the feed.
    pub fn checkpoint_passed(&self, epoch: u64) -> Delivery {
        let Ok(_rows) = self.rows() else {
            return Delivery::none();
        };
        self.to_downstream(ViewEvent::Checkpoint(epoch))
    }

    /// The view's rows and figures for a checkpoint: a one-row batch of
    /// figures (watermark, rows in, out, deleted), then the rows.
    pub fn checkpoint_state(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.rows()?;
        let snapshot = self.snapshot_of(&mut rows)?;
        let figures = RecordBatch::try_new(
            figures_schema(),
            vec![
                Arc::new(Int64Array::from(vec![
                    self.watermark.load(Ordering::Relaxed),
                ])),
                Arc::new(UInt64Array::from(vec![
                    self.rows_in.load(Ordering::Relaxed),
                ])),
                Arc::new(UInt64Array::from(vec![
                    self.rows_out.load(Ordering::Relaxed),
                ])),
                Arc::new(UInt64Array::from(vec![
                    self.rows_deleted.load(Ordering::Relaxed),
                ])),
            ],
        )?;
        let mut out = vec![figures];
        out.extend(snapshot.iter().cloned());
        Ok(out)
    }

    /// Loads what [`ViewContents::checkpoint_state`] wrote into contents
    /// nothing has been applied to yet.
    pub fn restore_state(&self, state: Vec<RecordBatch>) -> Result<()> {
        let mut batches = state.into_iter();
        let figures = batches
            .next()
            .ok_or_else(|| crate::internal!("a view's checkpoint state has no figures"))?;
        let column = |i: usize| figures.column(i).clone();
        let wm = column(0);
        let wm = wm
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| crate::internal!("a view's checkpoint figures have the wrong types"))?;
        let counters: Vec<u64> = (1..4)
            .map(|i| {
                column(i)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .map(|a| a.value(0))
                    .ok_or_else(|| {
                        crate::internal!("a view's checkpoint figures have the wrong types")
                    })
            })
            .collect::<Result<_>>()?;
        {
            let mut rows = self.rows()?;
            match &mut *rows {
                Rows::Append(snapshot) => {
                    *snapshot = Arc::new(batches.filter(|b| b.num_rows() > 0).collect());
                }
                Rows::Updating(m) => {
                    let weighted = changelog::with_weight(&self.schema);
                    for b in batches {
                        m.apply(&changelog::as_inserts(&b, weighted.clone())?)?;
                    }
                }
                Rows::Passing => {}
            }
        }
        self.watermark.store(wm.value(0), Ordering::Relaxed);
        self.rows_in.store(counters[0], Ordering::Relaxed);
        self.rows_out.store(counters[1], Ordering::Relaxed);
        self.rows_deleted.store(counters[2], Ordering::Relaxed);
        Ok(())
    }

    /// The dataflow has stopped: tells every reader why (input ended or
    /// failed) and lets attached dataflows see their feed close.
    pub async fn close_feed(&self) {
        let event = {
            let Ok(_rows) = self.rows() else { return };
            let state = self.state();
            let event = match state.strip_prefix("failed: ") {
                Some(reason) => ViewEvent::Failed(reason.into()),
                None => ViewEvent::End,
            };
            let to = self
                .downstream
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default();
            Delivery {
                to,
                event: Some(event),
            }
        };
        event.deliver().await;
    }

    /// The view's input ended (`finished`) or its dataflow failed.
    pub fn set_state(&self, s: impl Into<String>) {
        let s = s.into();
        let Ok(_rows) = self.rows() else { return };
        let event = if s == "finished" {
            Some(ViewEvent::End)
        } else {
            s.strip_prefix("failed: ")
                .map(|reason| ViewEvent::Failed(reason.into()))
        };
        if let Ok(mut g) = self.state.lock() {
            *g = s;
        }
        if let Some(e) = event {
            let _ = self.feed.send(e);
        }
    }

    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The current rows (without weights).
    pub fn snapshot(&self) -> Arc<Vec<RecordBatch>> {
        self.rows()
            .and_then(|mut r| self.snapshot_of(&mut r))
            .unwrap_or_default()
    }

    fn snapshot_of(&self, rows: &mut Rows) -> Result<Arc<Vec<RecordBatch>>> {
        match rows {
            Rows::Append(s) => Ok(s.clone()),
            Rows::Updating(m) => m.snapshot(&self.schema),
            Rows::Passing => Ok(Arc::new(Vec::new())),
        }
    }

    /// The rows now and every change after them.
    pub fn subscribe(&self) -> Result<Subscription> {
        let mut rows = self.rows()?;
        let snapshot = self.snapshot_of(&mut rows)?;
        Ok(Subscription {
            snapshot,
            watermark: self.watermark.load(Ordering::Relaxed),
            state: self.state(),
            feed: self.feed.subscribe(),
        })
    }

    /// The rows now and every change after them, for a downstream
    /// dataflow.
    pub fn attach(&self) -> Result<Attachment> {
        let mut rows = self.rows()?;
        let snapshot = self.snapshot_of(&mut rows)?;
        let (tx, rx) = mpsc::channel(16);
        let state = self.state();
        if state == "running" {
            self.downstream
                .lock()
                .map_err(|_| crate::internal!("view downstream lock poisoned"))?
                .push(tx);
        }
        Ok(Attachment {
            snapshot,
            watermark: self.watermark.load(Ordering::Relaxed),
            state,
            feed: rx,
        })
    }

    /// How many clients are subscribed right now.
    pub fn subscribers(&self) -> usize {
        self.feed.receiver_count()
    }

    pub fn set_metrics(&self, m: OperatorMetrics) {
        if let Ok(mut g) = self.metrics.lock() {
            *g = m;
        }
    }

    pub fn metrics(&self) -> OperatorMetrics {
        self.metrics.lock().map(|m| *m).unwrap_or_default()
    }
}

fn figures_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("watermark", DataType::Int64, false),
        Field::new("rows_in", DataType::UInt64, false),
        Field::new("rows_out", DataType::UInt64, false),
        Field::new("rows_deleted", DataType::UInt64, false),
    ]))
}

/// Keeps the number of batches logarithmic in the rows: the newest batch is
/// merged into the one before it while that one is at most twice its
/// size (a binary counter), so each row is copied O(log n) times in total
/// instead of the whole view being copied again every few batches.
fn merge_tail(batches: &mut Vec<RecordBatch>, schema: &SchemaRef) -> Result<()> {
    while batches.len() > MIN_BATCHES {
        let n = batches.len();
        if batches[n - 2].num_rows() > 2 * batches[n - 1].num_rows() {
            break;
        }
        let last = batches.pop().expect("more than MIN_BATCHES batches");
        let before = batches.pop().expect("more than MIN_BATCHES batches");
        batches.push(concat_batches(schema, &[before, last])?);
    }
    Ok(())
}

/// A materialized view as DataFusion sees it: a table over the snapshot.
#[derive(Debug, Clone)]
pub struct ViewTable {
    contents: Arc<ViewContents>,
}

impl ViewTable {
    pub fn new(contents: Arc<ViewContents>) -> Self {
        ViewTable { contents }
    }

    pub fn contents(&self) -> &Arc<ViewContents> {
        &self.contents
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.contents.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let view_state = self.contents.state();
        if let Some(reason) = view_state.strip_prefix("failed: ") {
            return Err(datafusion::error::DataFusionError::External(Box::new(
                crate::error::Error::Data {
                    sqlstate: "XX000",
                    message: format!("this materialized view stopped: {reason}"),
                },
            )));
        }
        crate::storage::snapshot_scan(
            &self.contents.snapshot(),
            &self.contents.schema,
            projection,
            state,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    #[test]
    fn an_append_only_view_keeps_few_batches_and_every_row_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let view = ViewContents::new(schema.clone());
        for i in 0..5000i64 {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(i * 10..i * 10 + 10))],
            )
            .unwrap();
            let _ = view.append(batch).unwrap();
        }
        let snapshot = view.snapshot();
        assert!(
            snapshot.len() <= MIN_BATCHES + 16,
            "{} batches",
            snapshot.len()
        );
        let values: Vec<i64> = snapshot
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values, (0..50_000).collect::<Vec<_>>());
        assert_eq!(view.rows_out.load(Ordering::Relaxed), 50_000);
    }
}
