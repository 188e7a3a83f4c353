//! Durable tables: rows held in memory as Arrow batches for reads, and
//! appended to an Arrow IPC log on disk before an INSERT or COPY returns.
//!
//! Each INSERT or COPY is written as one IPC record batch message and fsynced,
//! so a crash mid-write leaves at most a torn last message, which recovery
//! discards: a statement's rows are either all durable or not there at all.
//! On open the log is read back and rewritten compactly. This module knows
//! nothing about SQL or the catalog.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream,
};
use futures::TryStreamExt;
use std::collections::HashMap;

use crate::error::{Error, Result};

const LOG_FILE: &str = "data.arrows";

/// Batches smaller than this are merged in memory once a table holds many.
const SMALL_BATCH_ROWS: usize = 8192;
const MAX_BATCHES_BEFORE_MERGE: usize = 256;

/// A table whose rows survive restarts.
pub struct StoredTable {
    schema: SchemaRef,
    /// The current rows; replaced as a whole on each write so that a reader
    /// holds a consistent snapshot without blocking writers.
    rows: RwLock<Arc<Vec<RecordBatch>>>,
    /// The on-disk log; one writer at a time, in commit order.
    log: tokio::sync::Mutex<Arc<Mutex<TableLog>>>,
    column_defaults: HashMap<String, Expr>,
}

impl fmt::Debug for StoredTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl StoredTable {
    /// Creates a new, empty table whose log lives in `dir`.
    pub fn create(
        dir: &Path,
        schema: SchemaRef,
        column_defaults: HashMap<String, Expr>,
    ) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let log = TableLog::write_new(dir, &schema, &[])?;
        Ok(Self::from_parts(schema, Vec::new(), log, column_defaults))
    }

    /// Opens an existing table from its log in `dir`.
    pub fn open(dir: &Path, column_defaults: HashMap<String, Expr>) -> Result<Self> {
        let (schema, batches) = TableLog::read(dir)?;
        let batches = compact(&schema, batches)?;
        let log = TableLog::write_new(dir, &schema, &batches)?;
        Ok(Self::from_parts(schema, batches, log, column_defaults))
    }

    fn from_parts(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        log: TableLog,
        column_defaults: HashMap<String, Expr>,
    ) -> Self {
        StoredTable {
            schema,
            rows: RwLock::new(Arc::new(batches)),
            log: tokio::sync::Mutex::new(Arc::new(Mutex::new(log))),
            column_defaults,
        }
    }

    /// A consistent snapshot of the table's rows.
    pub fn snapshot(&self) -> Arc<Vec<RecordBatch>> {
        self.rows.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Appends `batches` durably as one unit; returns the rows written.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> Result<u64> {
        let batch = concat_batches(&self.schema, &batches)?;
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            return Ok(0);
        }
        let log = self.log.lock().await;
        let writer = log.clone();
        let to_write = batch.clone();
        tokio::task::spawn_blocking(move || {
            writer
                .lock()
                .map_err(|_| crate::internal!("table log lock poisoned"))?
                .append(&to_write)
        })
        .await
        .map_err(|e| crate::internal!("table log writer panicked: {e}"))??;
        let mut current = self
            .rows
            .write()
            .map_err(|_| crate::internal!("table rows lock poisoned"))?;
        let mut next: Vec<RecordBatch> = current.as_ref().clone();
        next.push(batch);
        if next.len() > MAX_BATCHES_BEFORE_MERGE {
            next = compact(&self.schema, next)?;
        }
        *current = Arc::new(next);
        drop(log);
        Ok(rows)
    }
}

/// Merges runs of small batches so scans do not crawl through thousands of
/// one-row batches after many single-row INSERTs.
fn compact(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut small: Vec<RecordBatch> = Vec::new();
    let mut small_rows = 0;
    for batch in batches {
        if batch.num_rows() >= SMALL_BATCH_ROWS {
            out.push(batch);
            continue;
        }
        small_rows += batch.num_rows();
        small.push(batch);
        if small_rows >= SMALL_BATCH_ROWS {
            out.push(concat_batches(schema, &small)?);
            small.clear();
            small_rows = 0;
        }
    }
    if !small.is_empty() {
        out.push(concat_batches(schema, &small)?);
    }
    Ok(out)
}

/// The `TableProvider` registered in DataFusion for a stored table; it holds
/// the table in an `Arc` so that the insert sink can reach it.
#[derive(Debug, Clone)]
pub struct TableHandle(pub Arc<StoredTable>);

#[async_trait]
impl TableProvider for TableHandle {
    fn schema(&self) -> SchemaRef {
        self.0.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.0.column_defaults.get(column)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        snapshot_scan(&self.0.snapshot(), &self.0.schema, projection, state)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported; tables take INSERT and COPY"
            )));
        }
        let sink = TableSink(self.0.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Writes an INSERT's rows into a stored table as one durable unit.
struct TableSink(Arc<StoredTable>);

impl fmt::Debug for TableSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TableSink")
    }
}

impl DisplayAs for TableSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredTableSink")
    }
}

#[async_trait]
impl DataSink for TableSink {
    fn schema(&self) -> &SchemaRef {
        &self.0.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        Ok(self.0.append(batches).await?)
    }
}

/// The append-only Arrow IPC stream file of one table.
struct TableLog {
    path: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
}

impl TableLog {
    /// Reads every complete batch of the log in `dir`. A torn last message
    /// (crash during append) is dropped with a warning: it was never
    /// acknowledged to a client.
    fn read(dir: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let path = dir.join(LOG_FILE);
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let reader = StreamReader::try_new(BufReader::new(file), None).map_err(|e| {
            Error::io(
                format!("reading the header of table log {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let schema = reader.schema();
        let mut batches = Vec::new();
        for batch in reader {
            match batch {
                Ok(b) => batches.push(b),
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "discarding an incomplete write at the end of a table log"
                    );
                    break;
                }
            }
        }
        Ok((schema, batches))
    }

    /// Writes a fresh log holding `batches` next to the old one and renames
    /// it into place, so a crash leaves either the old or the new log.
    fn write_new(dir: &Path, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Self> {
        let path = dir.join(LOG_FILE);
        let tmp = dir.join(format!("{LOG_FILE}.tmp"));
        let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", tmp.display()), e);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        let mut writer = StreamWriter::try_new(BufWriter::new(file), schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.flush()?;
        writer.get_mut().flush().map_err(|e| io("writing", e))?;
        writer
            .get_ref()
            .get_ref()
            .sync_all()
            .map_err(|e| io("syncing", e))?;
        fs::rename(&tmp, &path).map_err(|e| io("renaming", e))?;
        sync_dir(dir)?;
        Ok(TableLog { path, writer })
    }

    fn append(&mut self, batch: &RecordBatch) -> Result<()> {
        let path = self.path.display().to_string();
        self.writer.write(batch)?;
        self.writer.flush()?;
        self.writer
            .get_mut()
            .flush()
            .map_err(|e| Error::io(format!("writing {path}"), e))?;
        self.writer
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {path}"), e))
    }
}

/// Makes a rename or file creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Scans an in-memory snapshot, its batches spread over the session's
/// partitions so that a scan uses every core. Shared by tables and
/// materialized views.
pub fn snapshot_scan(
    snapshot: &[RecordBatch],
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    state: &dyn Session,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let target = state.config().target_partitions().max(1);
    let n = target.min(snapshot.len()).max(1);
    let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for (i, batch) in snapshot.iter().enumerate() {
        partitions[i % n].push(batch.clone());
    }
    let exec: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&partitions, schema.clone(), projection.cloned())?;
    Ok(exec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, ids: &[i64]) -> RecordBatch {
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn total_rows(t: &StoredTable) -> usize {
        t.snapshot().iter().map(|b| b.num_rows()).sum()
    }

    #[tokio::test]
    async fn rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
        let t = StoredTable::create(dir.path(), schema.clone(), HashMap::new()).unwrap();
        t.append(vec![batch(&schema, &[1, 2])]).await.unwrap();
        t.append(vec![batch(&schema, &[3])]).await.unwrap();
        drop(t);
        let t = StoredTable::open(dir.path(), HashMap::new()).unwrap();
        assert_eq!(total_rows(&t), 3);
        t.append(vec![batch(&schema, &[4])]).await.unwrap();
        drop(t);
        assert_eq!(
            total_rows(&StoredTable::open(dir.path(), HashMap::new()).unwrap()),
            4
        );
    }

    #[tokio::test]
    async fn torn_tail_is_discarded_and_earlier_rows_kept() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
        let t = StoredTable::create(dir.path(), schema.clone(), HashMap::new()).unwrap();
        t.append(vec![batch(&schema, &[1, 2])]).await.unwrap();
        t.append(vec![batch(&schema, &[3, 4, 5])]).await.unwrap();
        drop(t);
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 20)
            .unwrap();
        let t = StoredTable::open(dir.path(), HashMap::new()).unwrap();
        assert_eq!(total_rows(&t), 2);
    }

    #[tokio::test]
    async fn many_small_appends_are_merged_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let schema = schema();
        let t = StoredTable::create(dir.path(), schema.clone(), HashMap::new()).unwrap();
        for i in 0..(MAX_BATCHES_BEFORE_MERGE as i64 + 10) {
            t.append(vec![batch(&schema, &[i])]).await.unwrap();
        }
        assert!(t.snapshot().len() < MAX_BATCHES_BEFORE_MERGE);
        assert_eq!(total_rows(&t), MAX_BATCHES_BEFORE_MERGE + 10);
    }
}
