//! The `runnel_catalog` schema: runnel's own system tables, computed from the
//! live catalog each time a query runs (like RisingWave's `rw_catalog` and
//! Materialize's `mz_catalog`). Also [`ComputedTable`], the table whose rows
//! are built when a query runs, which the pg_catalog overrides use too.
//!
//! This file only reads the catalog and the sources' live figures; it must not
//! change them, and it must not keep rows between queries.
//!
//! # `runnel_catalog.sources`: one row per source
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `name` | text | the source's name |
//! | `connector` | text | `file`, `kafka`, `tcp`, `datagen`, `nexmark` |
//! | `format` | text | `json`, `csv` or `raw`; NULL for connectors that generate rows |
//! | `state` | text | `idle` (no reader), `running`, `finished` (a finite input read to its end), `retrying: <why>`, `failed: <error>` |
//! | `readers` | int4 | readers attached now (each query or view reading it) |
//! | `records_in` | int8 | good records decoded, summed over every reader since startup |
//! | `bytes_in` | int8 | bytes read, summed over every reader since startup |
//! | `errors` | int8 | bad records skipped (all of them, also those no longer in `source_errors`) |
//! | `watermark` | timestamp | the highest watermark a reader emitted; NULL before the first one, and NULL again once a finite input has ended (its watermark is then +infinity: every window can close; `state` says `finished`) |
//! | `positions` | text | per split, in split order: `split=position`, followed by ` (lag N)` when the split knows how far behind its end it is, joined with `, `; e.g. `/data/a.json=4096 (lag 0), /data/b.json=120 (lag 300)`. For files the split is the path and positions and lags are byte offsets; for Kafka, `partition N` and offsets. NULL before anything was read |
//! | `lag` | int8 | the sum of the known lags in `positions`; NULL when no split knows its lag |
//! | `replayable` | bool | true when a reader can start again from a recorded position (at-least-once and, with checkpoints, exactly-once input); false for inputs such as TCP that are lost when not read |
//! | `event_time_column` | text | the column named in `WATERMARK FOR`; NULL without event time |
//! | `event_time` | text | the WATERMARK expression as written, e.g. `ts - INTERVAL '2' SECOND` |
//! | `options` | text | the WITH options as written, e.g. `connector = 'file', path = '/data/a.json'` |
//!
//! # `runnel_catalog.source_errors`: the bad records each source skipped
//!
//! The last 1000 per source, oldest first; every one is counted in
//! `sources.errors`.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `source` | text | the source's name |
//! | `at` | timestamptz | when the record was read |
//! | `split` | text | the split it came from (a file path, a Kafka partition) |
//! | `position` | int8 | where it starts in the split (a byte offset in a file, an offset in Kafka) |
//! | `error` | text | why it could not be decoded |
//! | `raw` | bytea | the first 256 bytes of the record |
//! | `raw_text` | text | `raw` as UTF-8, invalid sequences replaced by U+FFFD, for reading in psql |

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::{Catalog, Entry};
use crate::connectors::{SourceRuntime, SourceTable};
use crate::sql::ObjectKind;
use crate::stream::EventTime;

/// The schema that holds runnel's system tables.
pub const SYSTEM_SCHEMA: &str = "runnel_catalog";

const SOURCES: &str = "sources";
const SOURCE_ERRORS: &str = "source_errors";
const MATERIALIZED_VIEWS: &str = "materialized_views";
const SINKS: &str = "sinks";
const CHECKPOINTS: &str = "checkpoints";

/// The `runnel_catalog` schema.
#[derive(Debug)]
pub struct SystemSchema {
    catalog: Arc<Catalog>,
}

impl SystemSchema {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        SystemSchema { catalog }
    }
}

/// Every system table and its columns, in name order (for
/// information_schema).
pub fn system_tables() -> Vec<(&'static str, SchemaRef)> {
    vec![
        (CHECKPOINTS, crate::state::checkpoints_schema()),
        (MATERIALIZED_VIEWS, views_schema()),
        (SINKS, crate::connectors::sinks::sinks_schema()),
        (SOURCE_ERRORS, source_errors_schema()),
        (SOURCES, sources_schema()),
    ]
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        system_tables()
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let catalog = self.catalog.clone();
        let table = match name {
            SOURCES => ComputedTable::new(
                sources_schema(),
                Vec::new(),
                Arc::new(move |_| sources_rows(&catalog)),
            ),
            SOURCE_ERRORS => ComputedTable::new(
                source_errors_schema(),
                Vec::new(),
                Arc::new(move |_| source_errors_rows(&catalog)),
            ),
            MATERIALIZED_VIEWS => ComputedTable::new(
                views_schema(),
                Vec::new(),
                Arc::new(move |_| views_rows(&catalog)),
            ),
            SINKS => ComputedTable::new(
                crate::connectors::sinks::sinks_schema(),
                Vec::new(),
                Arc::new(move |_| crate::connectors::sinks::sinks_rows(&sinks(&catalog))),
            ),
            CHECKPOINTS => ComputedTable::new(
                crate::state::checkpoints_schema(),
                Vec::new(),
                Arc::new(move |_| crate::state::checkpoints_rows(&catalog.checkpoints)),
            ),
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        system_tables().iter().any(|(n, _)| *n == name)
    }
}

fn sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("readers", DataType::Int32, false),
        Field::new("records_in", DataType::Int64, false),
        Field::new("bytes_in", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("positions", DataType::Utf8, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("replayable", DataType::Boolean, false),
        Field::new("event_time_column", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("options", DataType::Utf8, false),
    ]))
}

fn source_errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new("split", DataType::Utf8, false),
        Field::new("position", DataType::Int64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
        Field::new("raw_text", DataType::Utf8, false),
    ]))
}

/// The running sources of the catalog, in name order. Entries whose provider
/// is not a [`SourceTable`] have no live figures and are left out.
pub(super) fn sources(catalog: &Catalog) -> Vec<(Entry, Arc<SourceRuntime>)> {
    catalog
        .entries()
        .into_iter()
        .filter(|e| e.def.kind == ObjectKind::Source)
        .filter_map(|e| {
            let table =
                (e.provider.as_ref() as &dyn std::any::Any).downcast_ref::<SourceTable>()?;
            let runtime = table.runtime().clone();
            Some((e, runtime))
        })
        .collect()
}

/// The running sinks of the catalog, in name order (`runnel_catalog.sinks`
/// is documented in connectors/sinks/system.rs).
pub(super) fn sinks(catalog: &Catalog) -> Vec<Arc<crate::connectors::sinks::SinkRuntime>> {
    catalog
        .entries()
        .into_iter()
        .filter_map(|e| {
            let provider: &dyn TableProvider = e.provider.as_ref();
            (provider as &dyn std::any::Any)
                .downcast_ref::<crate::connectors::sinks::SinkTable>()
                .map(|t| t.runtime().clone())
        })
        .collect()
}

fn sources_rows(catalog: &Catalog) -> DfResult<RecordBatch> {
    use std::sync::atomic::Ordering::Relaxed;
    let sources = sources(catalog);
    let runtimes: Vec<&SourceRuntime> = sources.iter().map(|(_, r)| r.as_ref()).collect();
    let count = |get: fn(&SourceRuntime) -> u64| -> ArrayRef {
        Arc::new(
            runtimes
                .iter()
                .map(|r| i64::try_from(get(r)).unwrap_or(i64::MAX))
                .collect::<Int64Array>(),
        )
    };
    let positions: Vec<_> = runtimes.iter().map(|r| r.stats.positions()).collect();
    let columns: Vec<ArrayRef> = vec![
        texts(runtimes.iter().map(|r| Some(r.spec.name.clone()))),
        texts(runtimes.iter().map(|r| Some(r.spec.connector.clone()))),
        texts(
            runtimes
                .iter()
                .map(|r| r.spec.format.as_ref().map(|f| f.name().to_string())),
        ),
        texts(runtimes.iter().map(|r| Some(r.stats.state()))),
        Arc::new(
            runtimes
                .iter()
                .map(|r| i32::try_from(r.stats.readers.load(Relaxed)).unwrap_or(i32::MAX))
                .collect::<Int32Array>(),
        ),
        count(|r| r.stats.records_in.load(Relaxed)),
        count(|r| r.stats.bytes_in.load(Relaxed)),
        count(|r| r.stats.errors.load(Relaxed)),
        Arc::new(
            runtimes
                .iter()
                .map(|r| watermark(r.stats.watermark.load(Relaxed)))
                .collect::<TimestampMicrosecondArray>(),
        ),
        texts(positions.iter().map(|p| {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(split, (position, lag))| match lag {
                        Some(lag) => format!("{split}={position} (lag {lag})"),
                        None => format!("{split}={position}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        })),
        Arc::new(
            positions
                .iter()
                .map(|p| {
                    let known: Vec<i64> = p.values().filter_map(|(_, lag)| *lag).collect();
                    (!known.is_empty())
                        .then(|| known.iter().fold(0i64, |a, l| a.saturating_add(*l)))
                })
                .collect::<Int64Array>(),
        ),
        Arc::new(
            runtimes
                .iter()
                .map(|r| Some(r.connector.can_replay()))
                .collect::<BooleanArray>(),
        ),
        texts(
            runtimes
                .iter()
                .map(|r| r.spec.event_time.as_ref().map(|e| e.column.clone())),
        ),
        texts(
            runtimes
                .iter()
                .map(|r| r.spec.event_time.as_ref().map(|e| e.sql.clone())),
        ),
        texts(runtimes.iter().map(|r| Some(with_options(r)))),
    ];
    Ok(RecordBatch::try_new(sources_schema(), columns)?)
}

/// A stored watermark as a `timestamp` value: none before the first, and
/// none for +infinity, which a PostgreSQL client cannot receive from runnel
/// yet (see the module docs).
fn watermark(stored: EventTime) -> Option<i64> {
    (stored != EventTime::MIN && stored != EventTime::MAX).then_some(stored)
}

/// The WITH options in the statement's spelling, `connector` first.
fn with_options(runtime: &SourceRuntime) -> String {
    let spec = &runtime.spec;
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    std::iter::once(format!("connector = {}", quote(&spec.connector)))
        .chain(
            spec.options
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("connector"))
                .map(|(k, v)| format!("{k} = {}", quote(v))),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

fn source_errors_rows(catalog: &Catalog) -> DfResult<RecordBatch> {
    let mut rows = Vec::new();
    for (_, runtime) in sources(catalog) {
        for record in runtime.stats.error_log() {
            rows.push((runtime.spec.name.clone(), record));
        }
    }
    let micros = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };
    let columns: Vec<ArrayRef> = vec![
        texts(rows.iter().map(|(name, _)| Some(name.clone()))),
        Arc::new(
            rows.iter()
                .map(|(_, r)| Some(micros(r.at)))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("+00:00"),
        ),
        texts(rows.iter().map(|(_, r)| Some(r.split.clone()))),
        Arc::new(
            rows.iter()
                .map(|(_, r)| Some(i64::try_from(r.position).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        ),
        texts(rows.iter().map(|(_, r)| Some(r.message.clone()))),
        Arc::new(
            rows.iter()
                .map(|(_, r)| Some(r.raw.as_slice()))
                .collect::<BinaryArray>(),
        ),
        texts(
            rows.iter()
                .map(|(_, r)| Some(String::from_utf8_lossy(&r.raw).into_owned())),
        ),
    ];
    Ok(RecordBatch::try_new(source_errors_schema(), columns)?)
}

fn texts(values: impl Iterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// Builds a table's rows from the rows of its inputs (in the order given).
pub(super) type Compute = Arc<dyn Fn(&[RecordBatch]) -> DfResult<RecordBatch> + Send + Sync>;

/// A table whose rows are computed when a query runs, not when it is
/// planned: a prepared statement executed twice sees the catalog of each
/// execution.
#[derive(Clone)]
pub(super) struct ComputedTable {
    schema: SchemaRef,
    /// Tables whose whole contents `compute` reads.
    inputs: Vec<Arc<dyn TableProvider>>,
    compute: Compute,
}

impl std::fmt::Debug for ComputedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ComputedTable {
    pub(super) fn new(
        schema: SchemaRef,
        inputs: Vec<Arc<dyn TableProvider>>,
        compute: Compute,
    ) -> Self {
        ComputedTable {
            schema,
            inputs,
            compute,
        }
    }
}

#[async_trait]
impl TableProvider for ComputedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Planning the input scans reads nothing; they run with the query.
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            inputs.push(input.scan(state, None, &[], None).await?);
        }
        let partition = ComputedRows {
            schema: self.schema.clone(),
            inputs,
            compute: self.compute.clone(),
        };
        StreamingTable::try_new(self.schema.clone(), vec![Arc::new(partition)])?
            .scan(state, projection, filters, limit)
            .await
    }
}

#[derive(Clone)]
struct ComputedRows {
    schema: SchemaRef,
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    compute: Compute,
}

impl std::fmt::Debug for ComputedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputedRows")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ComputedRows {
    async fn rows(self, ctx: Arc<TaskContext>) -> DfResult<RecordBatch> {
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for plan in self.inputs {
            let schema = plan.schema();
            let batches = collect(plan, ctx.clone()).await?;
            inputs.push(concat_batches(&schema, &batches)?);
        }
        (self.compute)(&inputs)
    }
}

impl PartitionStream for ComputedRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let this = self.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(this.rows(ctx)),
        ))
    }
}

/// `runnel_catalog.materialized_views`: one row per materialized view.
/// `rows_in` counts source rows read, `rows_out` rows published;
/// `state_rows`/`state_bytes` are the open windows' groups and their size
/// (they shrink as windows close); `late_rows` were dropped because their
/// window had closed; `rows_deleted` counts rows an updating view replaced
/// or removed; `kind` is `append-only` or `updating`; `plan` is the
/// operator graph; `subscribers` counts the SUBSCRIBEs reading it now.
fn views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("state_rows", DataType::Int64, false),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "watermark",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("plan", DataType::Utf8, false),
        Field::new("subscribers", DataType::Int64, false),
    ]))
}

fn views_rows(catalog: &Catalog) -> DfResult<RecordBatch> {
    use std::sync::atomic::Ordering::Relaxed;
    let views: Vec<(String, Arc<crate::operators::ViewContents>)> = catalog
        .entries()
        .into_iter()
        .filter_map(|e| {
            let provider: &dyn TableProvider = e.provider.as_ref();
            (provider as &dyn std::any::Any)
                .downcast_ref::<crate::operators::ViewTable>()
                .map(|v| (e.def.name.clone(), v.contents().clone()))
        })
        .collect();
    let int = |f: &dyn Fn(&crate::operators::ViewContents) -> u64| -> ArrayRef {
        Arc::new(
            views
                .iter()
                .map(|(_, v)| i64::try_from(f(v)).unwrap_or(i64::MAX))
                .collect::<Int64Array>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        texts(views.iter().map(|(n, _)| Some(n.clone()))),
        texts(views.iter().map(|(_, v)| Some(v.state()))),
        int(&|v| v.rows_in.load(Relaxed)),
        int(&|v| v.rows_out.load(Relaxed)),
        int(&|v| v.metrics().state_rows),
        int(&|v| v.metrics().state_bytes),
        int(&|v| v.metrics().late_rows),
        int(&|v| v.rows_deleted.load(Relaxed)),
        texts(views.iter().map(|(_, v)| {
            Some(
                if v.is_updating() {
                    "updating"
                } else {
                    "append-only"
                }
                .to_string(),
            )
        })),
        Arc::new(
            views
                .iter()
                .map(|(_, v)| watermark(v.watermark.load(Relaxed)))
                .collect::<TimestampMicrosecondArray>(),
        ),
        texts(
            views
                .iter()
                .map(|(_, v)| Some(v.graph.lock().map(|g| g.join("\n")).unwrap_or_default())),
        ),
        int(&|v| v.subscribers() as u64),
    ];
    Ok(RecordBatch::try_new(views_schema(), columns)?)
}
