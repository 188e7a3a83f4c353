//! Sinks: where results go. `CREATE SINK name FROM view | AS query WITH
//! (connector = 'parquet', path = ...)` writes the rows continuously into
//! Parquet files that any tool reads (docs/design/0007-parquet-sink.md).
//!
//! [`SinkSpec`] is the checked meaning of the WITH options; a
//! [`SinkRuntime`] is a running sink: its task (`task.rs`), its figures
//! (shown in `runnel_catalog.sinks`) and, for `AS query`, the private
//! dataflow it reads. The Parquet encoding and the commit protocol live in
//! `parquet.rs`, partition directories in `partition.rs`. This module does
//! not plan queries or touch the catalog; `database::sinks` does.

mod commit;
mod parquet;
mod partition;
mod system;
mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::watch;

pub use commit::{Committed, commit_files};
pub use parquet::{
    FinishedFile, ParquetSinkConfig, ParquetSinkWriter, SinkCompression, unpartitioned,
};
pub use partition::{NULL_PARTITION, PartitionColumn, Partitioner};

pub use system::{sinks_rows, sinks_schema};

use super::{Options, invalid};
use crate::error::{Error, Result};
use crate::operators::Attachment;
use crate::stream::{Dataflow, EventTime};

/// The connectors a sink can have, for messages.
pub const SINK_CONNECTORS: &[&str] = &["parquet"];

/// What a CREATE SINK means, checked.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    /// The directory the files go under (absolute).
    pub path: PathBuf,
    /// `FROM` what, for the system table: a view's name or `query`.
    pub input: String,
    pub partitioner: Partitioner,
    pub config: ParquetSinkConfig,
    /// The WITH options as written.
    pub options: BTreeMap<String, String>,
}

impl SinkSpec {
    /// Checks the options against the rows the sink will write. Relative
    /// paths are relative to the data directory (like PostgreSQL's
    /// server-side COPY).
    pub fn try_new(
        name: &str,
        input: &str,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        state: &SessionState,
        data_dir: &Path,
    ) -> Result<Self> {
        let connector = options.get("connector").cloned().ok_or_else(|| {
            invalid("CREATE SINK needs WITH (connector = 'parquet', path = '...')".into())
        })?;
        if !connector.eq_ignore_ascii_case("parquet") {
            return Err(invalid(format!(
                "unknown sink connector '{connector}' (valid: {})",
                SINK_CONNECTORS.join(", ")
            )));
        }
        let mut o = Options::new("parquet", options.clone());
        o.take("connector", &[]);
        let path = PathBuf::from(o.required("path", &[])?);
        let path = if path.is_absolute() {
            path
        } else {
            data_dir.join(path)
        };
        let partitioner = match o.take("partition_by", &["partitioned_by"]) {
            Some(text) if !text.trim().is_empty() => Partitioner::try_new(&text, schema, state)?,
            _ => Partitioner::none(),
        };
        let mut config = ParquetSinkConfig::new("");
        if let Some(n) = o.int("rollover_rows", &[], 1, i64::MAX)? {
            config.rollover_rows = n as u64;
        }
        if let Some(text) = o.take("rollover_bytes", &["rollover_size"]) {
            config.rollover_bytes = parse_bytes(&text).filter(|b| *b > 0).ok_or_else(|| {
                invalid(format!(
                    "option rollover_bytes must be a size such as '128MB' or '1048576', not '{text}'"
                ))
            })?;
        }
        if let Some(d) = o.duration("rollover_interval", &[])? {
            if d.is_zero() {
                return Err(invalid("option rollover_interval must be positive".into()));
            }
            config.rollover_interval = d;
        }
        if let Some(text) = o.take("compression", &[]) {
            config.compression = SinkCompression::parse(&text).ok_or_else(|| {
                invalid(format!(
                    "option compression must be 'zstd', 'snappy' or 'none', not '{text}'"
                ))
            })?;
        }
        if let Some(n) = o.int("max_open_files", &[], 1, 100_000)? {
            config.max_open_files = n as usize;
        }
        o.finish()?;
        if crate::stream::changelog::is_updating(schema) {
            return Err(updating_refused(input));
        }
        Ok(SinkSpec {
            name: name.to_string(),
            path,
            input: input.to_string(),
            partitioner,
            config,
            options: options.clone(),
        })
    }

    /// Creates the directory and proves a file can be written there, so a
    /// path that cannot work fails CREATE SINK instead of every commit.
    pub fn prepare_path(&self) -> Result<()> {
        let fail = |what: &str, e: std::io::Error| -> Error {
            let message = format!("sink path {}: {what}: {e}", self.path.display());
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Error::Plan {
                    sqlstate: "42501",
                    message,
                }
            } else {
                Error::io(message, e)
            }
        };
        std::fs::create_dir_all(&self.path).map_err(|e| fail("cannot create the directory", e))?;
        let probe = self
            .path
            .join(format!(".runnel-probe-{}.tmp", std::process::id()));
        std::fs::write(&probe, b"probe").map_err(|e| fail("cannot write there", e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// 0A000 for an updating input (docs/design/0007-parquet-sink.md says why).
pub fn updating_refused(input: &str) -> Error {
    Error::Unsupported(format!(
        "a Parquet sink writes append-only rows, and {input} is updating (its rows are \
         replaced or deleted); sink a view whose rows are final (windows emitted at their end, \
         filters and projections of a stream), or follow the changes with SUBSCRIBE"
    ))
}

/// '128MB', '64 MiB', '1g', '1048576'.
fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Where FLUSH stands with a sink.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The highest FLUSH ticket whose rows are all in visible files
    /// (`u64::MAX` once the input has ended).
    pub flushed: u64,
    /// Failed commits so far: FLUSH fails when one happens while it waits.
    pub failures: u64,
    pub error: Option<String>,
    /// The sink stopped for good.
    pub failed: bool,
    /// The last complete checkpoint whose files are all committed
    /// (`u64::MAX` once the input has ended and everything is committed).
    pub committed: u64,
}

/// A sink's live figures, for `runnel_catalog.sinks`.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub rows_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub rows_buffered: AtomicU64,
    pub open_files: AtomicU64,
    pub commit_errors: AtomicU64,
    /// The input's watermark (µs); `EventTime::MIN` before any.
    pub watermark: AtomicI64,
    state: Mutex<String>,
    last_error: Mutex<Option<String>>,
    last_commit: Mutex<Option<SystemTime>>,
}

impl SinkStats {
    fn new() -> Self {
        let stats = SinkStats {
            watermark: AtomicI64::new(EventTime::MIN),
            ..Default::default()
        };
        stats.set_state("running");
        stats
    }

    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set_state(&self, s: impl Into<String>) {
        if let Ok(mut g) = self.state.lock() {
            *g = s.into();
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok()?.clone()
    }

    fn set_error(&self, e: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }

    pub fn last_commit(&self) -> Option<SystemTime> {
        *self.last_commit.lock().ok()?
    }

    fn committed(&self, done: Committed) {
        self.rows_written.fetch_add(done.rows, Ordering::Relaxed);
        self.files_written.fetch_add(done.files, Ordering::Relaxed);
        self.bytes_written.fetch_add(done.bytes, Ordering::Relaxed);
        if let Ok(mut g) = self.last_commit.lock() {
            *g = Some(SystemTime::now());
        }
    }
}

/// A running sink. Dropping it (or [`SinkRuntime::stop`]) stops its task
/// and its private dataflow; files not yet committed are discarded.
pub struct SinkRuntime {
    pub spec: SinkSpec,
    pub schema: SchemaRef,
    pub stats: Arc<SinkStats>,
    progress: watch::Receiver<Progress>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The query's dataflow for `CREATE SINK ... AS query`.
    dataflow: Mutex<Option<Arc<Dataflow>>>,
}

impl std::fmt::Debug for SinkRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkRuntime")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl SinkRuntime {
    /// Starts writing what `attachment` delivers. `run` numbers this start
    /// of the sink (file names never repeat across restarts); `id` is the
    /// sink's catalog id.
    /// `link` reports the sink's state at checkpoints (and restores it);
    /// `completed` tells it when to commit.
    #[allow(clippy::too_many_arguments)] // the parts of a sink, each used once
    pub fn start(
        mut spec: SinkSpec,
        schema: SchemaRef,
        id: u64,
        run: u64,
        attachment: Attachment,
        dataflow: Option<Dataflow>,
        link: crate::state::CheckpointLink,
        completed: watch::Receiver<u64>,
    ) -> Arc<Self> {
        spec.config.file_prefix = format!("part-{id}-{run}");
        commit::remove_stale_temporaries(&spec.path, &format!("part-{id}-"));
        let stats = Arc::new(SinkStats::new());
        let (progress_tx, progress) = watch::channel(Progress::default());
        let writer = ParquetSinkWriter::new(
            spec.config.clone(),
            schema.clone(),
            spec.partitioner.clone(),
        );
        let task = task::SinkTask {
            name: spec.name.clone(),
            root: spec.path.clone(),
            writer,
            stats: stats.clone(),
            progress: progress_tx,
            link,
            completed,
            pending: Vec::new(),
        };
        let handle = tokio::spawn(task.run(attachment));
        Arc::new(SinkRuntime {
            spec,
            schema,
            stats,
            progress,
            task: Mutex::new(Some(handle)),
            dataflow: Mutex::new(dataflow.map(Arc::new)),
        })
    }

    /// Stops the task and the private dataflow.
    pub fn stop(&self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(handle) = t.take()
        {
            handle.abort();
        }
        if let Ok(mut d) = self.dataflow.lock() {
            d.take();
        }
    }

    /// Asks the private dataflow (if any) for FLUSH `ticket`; a sink on a
    /// view gets the ticket through the view's feed.
    pub fn request_flush(&self, ticket: u64) {
        if let Ok(d) = self.dataflow.lock()
            && let Some(flow) = d.as_ref()
        {
            flow.request_flush(ticket);
        }
    }

    /// Asks the private dataflow (if any) for the barrier of checkpoint
    /// `epoch`; a sink on a view gets it through the view's feed.
    pub fn request_checkpoint(&self, epoch: u64) {
        if let Ok(d) = self.dataflow.lock()
            && let Some(flow) = d.as_ref()
        {
            flow.request_checkpoint(epoch);
        }
    }

    /// Waits until every row before FLUSH `ticket` is in a finished file
    /// (the next checkpoint commits it).
    pub async fn wait_flushed(&self, ticket: u64) -> Result<()> {
        self.wait(|p| p.flushed >= ticket).await
    }

    /// Waits until the files of checkpoint `epoch` are committed. Fails
    /// when a commit fails meanwhile (the sink keeps retrying).
    pub async fn wait_committed(&self, epoch: u64) -> Result<()> {
        self.wait(|p| p.committed >= epoch).await
    }

    async fn wait(&self, done: impl Fn(&Progress) -> bool) -> Result<()> {
        let mut progress = self.progress.clone();
        let failures_before = progress.borrow().failures;
        let seen = progress
            .wait_for(|p| done(p) || p.failures > failures_before || p.failed)
            .await
            .map(|p| p.clone())
            .map_err(|_| Error::Canceled("the sink stopped before FLUSH completed"))?;
        if done(&seen) {
            return Ok(());
        }
        let why = seen
            .error
            .or_else(|| self.stats.last_error())
            .unwrap_or_else(|| self.stats.state());
        Err(Error::io(
            format!(
                "FLUSH could not make the rows of sink \"{}\" visible (it keeps them and retries; \
                 see runnel_catalog.sinks)",
                self.spec.name
            ),
            std::io::Error::other(why),
        ))
    }
}

impl Drop for SinkRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A sink as a relation: its columns are the rows it writes, and reading
/// it reads the files it has committed (the archive), so one query can
/// join history with a live view.
#[derive(Debug, Clone)]
pub struct SinkTable {
    runtime: Arc<SinkRuntime>,
}

impl SinkTable {
    pub fn new(runtime: Arc<SinkRuntime>) -> Self {
        SinkTable { runtime }
    }

    pub fn runtime(&self) -> &Arc<SinkRuntime> {
        &self.runtime
    }

    fn listing(&self) -> DfResult<ListingTable> {
        let spec = &self.runtime.spec;
        let url = ListingTableUrl::parse(format!("{}/", spec.path.display()))?;
        let partitions = spec
            .partitioner
            .columns()
            .iter()
            .map(|c| (c.name.clone(), datafusion::arrow::datatypes::DataType::Utf8))
            .collect();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(partitions);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(self.runtime.schema.clone());
        ListingTable::try_new(config)
    }
}

#[async_trait]
impl TableProvider for SinkTable {
    fn schema(&self) -> SchemaRef {
        self.runtime.schema.clone()
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
        // Partition columns come after the file's columns; they are left out.
        let all: Vec<usize> = (0..self.runtime.schema.fields().len()).collect();
        let projection = projection.unwrap_or(&all);
        self.listing()?
            .scan(state, Some(projection), filters, limit)
            .await
    }
}
