//! [`ViewContents`]: the rows of a materialized view, published as
//! immutable snapshots, and the `TableProvider` that lets any SQL read them.
//!
//! The dataflow appends whole batches under a short lock by swapping in a
//! new `Arc<Vec<RecordBatch>>`; a reader takes the current `Arc` and scans
//! it without blocking the dataflow. A read therefore sees every row of a
//! batch or none of it, never half of one.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::stream::{EventTime, OperatorMetrics};

/// Past this many batches, a snapshot is compacted into one batch so scans
/// stay cheap.
const COMPACT_AFTER: usize = 64;

/// The live rows and figures of one materialized view.
#[derive(Debug)]
pub struct ViewContents {
    schema: SchemaRef,
    snapshot: RwLock<Arc<Vec<RecordBatch>>>,
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// The view's watermark (µs); `EventTime::MIN` before any.
    pub watermark: AtomicI64,
    /// Operator figures, refreshed by the dataflow.
    metrics: Mutex<OperatorMetrics>,
    /// `running`, `finished` (a finite input fully read) or `failed: ...`.
    state: Mutex<String>,
    /// The operator graph, for EXPLAIN.
    pub graph: Mutex<Vec<String>>,
}

impl ViewContents {
    pub fn new(schema: SchemaRef) -> Self {
        ViewContents {
            schema,
            snapshot: RwLock::new(Arc::new(Vec::new())),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            watermark: AtomicI64::new(EventTime::MIN),
            metrics: Mutex::new(OperatorMetrics::default()),
            state: Mutex::new("running".into()),
            graph: Mutex::new(Vec::new()),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends rows as one unit.
    pub fn append(&self, batches: Vec<RecordBatch>) -> crate::error::Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut guard = self
            .snapshot
            .write()
            .map_err(|_| crate::internal!("view snapshot lock poisoned"))?;
        let mut next: Vec<RecordBatch> = guard.as_ref().clone();
        next.extend(batches);
        if next.len() > COMPACT_AFTER {
            next = vec![concat_batches(&self.schema, &next)?];
        }
        *guard = Arc::new(next);
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<Vec<RecordBatch>> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set_metrics(&self, m: OperatorMetrics) {
        if let Ok(mut g) = self.metrics.lock() {
            *g = m;
        }
    }

    pub fn metrics(&self) -> OperatorMetrics {
        self.metrics.lock().map(|m| *m).unwrap_or_default()
    }

    pub fn set_state(&self, s: impl Into<String>) {
        if let Ok(mut g) = self.state.lock() {
            *g = s.into();
        }
    }

    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
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
