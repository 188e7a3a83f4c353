//! `Database`: the one front door. The server, the tests, the benchmarks and
//! the examples all run SQL through [`Database`] and its [`Session`]s.
//!
//! A `Database` owns the catalog and a template DataFusion session state with
//! every function and catalog schema registered; each [`Session`] clones that
//! state so that SET in one connection never leaks into another. This module
//! decides what each typed statement does; it does not speak pgwire.

mod checkpoint;
mod copy;
mod ddl;
mod demo;
mod functions;
mod hop;
mod output;
pub(crate) mod session;
mod settings;
mod show;
mod sinks;
use show::{objects_schema, show_all_schema, show_schema};
mod sources;
mod subscribe;
mod types;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, TableReference};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast;
use futures::StreamExt;

pub use copy::CopyIn;
pub use output::{Command, CopyOut, Output, Rows, rows_from_batches};
pub use settings::{PG_VERSION, Settings, parse_duration_ms, server_version, version_string};

use crate::catalog::{
    Catalog, CatalogSchema, DATABASE_NAME, Definition, Entry, InformationSchema, RunnelPgCatalog,
    SCHEMA_NAME,
};
use crate::error::{CatalogErrorKind, Error, Result};
use crate::sql::{ObjectKind, ParsedStatement, Parser, SetValue, Statement};
use crate::storage::{StoredTable, TableHandle};

/// How to open a database.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where definitions and table rows are kept.
    pub data_dir: PathBuf,
    /// Parallelism of query execution; defaults to the number of cores.
    pub target_partitions: usize,
    /// How often a checkpoint is taken (FLUSH and a clean stop take one
    /// too).
    pub checkpoint_interval: std::time::Duration,
    /// Start without the last checkpoint (moved aside): the way out of a
    /// damaged one.
    pub discard_checkpoints: bool,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            discard_checkpoints: false,
        }
    }
}

/// The default time between checkpoints: what a crash may have to replay.
pub const DEFAULT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A runnel database: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    catalog: Arc<Catalog>,
    parser: Parser,
    /// Fully registered state each session starts from.
    template: SessionState,
    /// The running dataflow of each materialized view, by name.
    dataflows: std::sync::Mutex<HashMap<String, Arc<crate::stream::Dataflow>>>,
    /// The running sinks, by name.
    sinks: std::sync::Mutex<HashMap<String, Arc<crate::connectors::sinks::SinkRuntime>>>,
    /// FLUSH tickets, increasing.
    flush_ticket: std::sync::atomic::AtomicU64,
    /// The checkpoint coordinator.
    checkpoints: checkpoint::Checkpoints,
}

/// Who is on the other end of a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    /// The PostgreSQL backend process id the client was given.
    pub backend_pid: i32,
}

impl Default for SessionInfo {
    fn default() -> Self {
        SessionInfo {
            user: "runnel".to_string(),
            backend_pid: std::process::id() as i32,
        }
    }
}

/// How long a clean shutdown waits for its last checkpoint.
const SHUTDOWN_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(5);

impl Database {
    /// Opens (or creates) the database in `config.data_dir` and brings back
    /// every object defined there.
    pub async fn open(config: Config) -> Result<Database> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::io(
                format!("creating data directory {}", config.data_dir.display()),
                e,
            )
        })?;
        let (catalog, definitions) = Catalog::load(&config.data_dir)?;
        let catalog = Arc::new(catalog);
        let template = build_state(&config, &catalog)?;
        let store = crate::state::CheckpointStore::new(&config.data_dir);
        if config.discard_checkpoints
            && let Some(aside) = store.discard()?
        {
            tracing::warn!(moved_to = %aside.display(), "starting without the checkpoints");
        }
        let started = std::time::Instant::now();
        let restored = store.load()?;
        store.remove_incomplete()?;
        if let Some(r) = &restored
            && let Ok(mut slot) = catalog.checkpoints.restored.lock()
        {
            *slot = Some((r.epoch, r.bytes, started.elapsed()));
        }
        let (checkpoints, coordinator) = checkpoint::Checkpoints::start(
            store,
            restored,
            config.checkpoint_interval,
            catalog.checkpoints.clone(),
        );
        let db = Database {
            shared: Arc::new(Shared {
                config,
                catalog,
                parser: Parser::new(),
                template,
                dataflows: std::sync::Mutex::new(HashMap::new()),
                sinks: std::sync::Mutex::new(HashMap::new()),
                flush_ticket: std::sync::atomic::AtomicU64::new(0),
                checkpoints,
            }),
        };
        for def in definitions {
            let entry = db.rebuild(&def).await.map_err(|e| {
                Error::io(
                    format!(
                        "restoring {} \"{}\" from the catalog failed: {e}",
                        def.kind, def.name
                    ),
                    std::io::Error::other(e.to_string()),
                )
            })?;
            db.shared.catalog.restore(entry)?;
        }
        db.shared.catalog.remove_orphans()?;
        if let Ok(slot) = db.shared.catalog.checkpoints.restored.lock()
            && let Some((epoch, bytes, _)) = *slot
        {
            tracing::info!(
                epoch,
                bytes,
                ms = started.elapsed().as_millis() as u64,
                "restored from checkpoint"
            );
        }
        let weak = Arc::downgrade(&db.shared);
        db.shared.checkpoints.run(
            coordinator,
            Box::new(move |epoch| {
                if let Some(shared) = weak.upgrade() {
                    let db = Database { shared };
                    for flow in db.dataflow_handles() {
                        flow.request_checkpoint(epoch);
                    }
                    for sink in db.sink_handles() {
                        sink.request_checkpoint(epoch);
                    }
                }
            }),
        );
        Ok(db)
    }

    /// Starts a session with default settings.
    pub fn session(&self) -> Session {
        self.session_for(SessionInfo::default())
    }

    /// Starts a session for a connected client.
    pub fn session_for(&self, info: SessionInfo) -> Session {
        let settings = Arc::new(RwLock::new(Settings::new(&info.user)));
        let state = SessionStateBuilder::new_from_existing(self.shared.template.clone()).build();
        let ctx = SessionContext::new_with_state(state);
        functions::register_session_functions(&ctx, settings.clone(), &info);
        Session {
            db: self.clone(),
            ctx,
            settings,
            info,
            cursors: HashMap::new(),
        }
    }

    /// The parser shared by every session.
    pub fn parser(&self) -> &Parser {
        &self.shared.parser
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.shared.catalog
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Makes everything durable and stops background work. Table writes are
    /// already durable when acknowledged, so this only has to wait for them.
    pub async fn shutdown(&self) -> Result<()> {
        // A clean stop takes a last checkpoint (which commits what sinks
        // hold), within a bound: otherwise the next start replays from the
        // previous one.
        // What has arrived is taken in first (a FLUSH), so the last
        // checkpoint holds it and the sinks commit it.
        let last = tokio::time::timeout(SHUTDOWN_CHECKPOINT, async {
            self.session().flush().await?;
            self.checkpoint_and_commit().await
        })
        .await;
        match last {
            Ok(Ok(epoch)) => tracing::info!(epoch, "last checkpoint taken"),
            Ok(Err(e)) => tracing::warn!("no last checkpoint at shutdown: {e}"),
            Err(_) => tracing::warn!(
                "the last checkpoint did not complete within {SHUTDOWN_CHECKPOINT:?}; the next \
                 start replays from the previous one"
            ),
        }
        self.shared.checkpoints.stop();
        tracing::info!("database shut down");
        Ok(())
    }

    /// Takes a checkpoint now and waits until every sink has committed
    /// the files it names.
    pub async fn checkpoint_and_commit(&self) -> Result<u64> {
        let epoch = self.shared.checkpoints.checkpoint_now().await?;
        futures::future::try_join_all(self.sink_handles().iter().map(|s| s.wait_committed(epoch)))
            .await?;
        Ok(epoch)
    }

    /// Registers `owner` with the checkpoint coordinator and hands it its
    /// restored state.
    fn checkpoint_link(&self, owner: crate::state::Owner) -> crate::state::CheckpointLink {
        self.shared.checkpoints.link(owner)
    }

    /// The epoch sinks watch to commit.
    fn checkpoint_completed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.checkpoints.completed()
    }

    fn register_dataflow(&self, name: &str, dataflow: crate::stream::Dataflow) {
        if let Ok(mut flows) = self.shared.dataflows.lock() {
            flows.insert(name.to_string(), Arc::new(dataflow));
        }
    }

    /// Stops a dropped view's dataflow (dropping it aborts its tasks), or a
    /// dropped sink.
    /// The object with catalog id `id` takes no further part in
    /// checkpoints (dropped, or its CREATE failed).
    fn forget_checkpoints_of(&self, id: u64) {
        self.shared
            .checkpoints
            .forget(&crate::state::dataflow_owner(id));
        self.shared
            .checkpoints
            .forget(&crate::state::sink_owner(id));
    }

    fn forget_dataflow(&self, name: &str, id: u64) {
        self.forget_checkpoints_of(id);
        if let Ok(mut flows) = self.shared.dataflows.lock() {
            flows.remove(name);
        }
        if let Ok(mut sinks) = self.shared.sinks.lock()
            && let Some(sink) = sinks.remove(name)
        {
            sink.stop();
        }
    }

    fn register_sink(&self, name: &str, sink: Arc<crate::connectors::sinks::SinkRuntime>) {
        if let Ok(mut sinks) = self.shared.sinks.lock() {
            sinks.insert(name.to_string(), sink);
        }
    }

    fn sink_handles(&self) -> Vec<Arc<crate::connectors::sinks::SinkRuntime>> {
        self.shared
            .sinks
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn dataflow_handles(&self) -> Vec<Arc<crate::stream::Dataflow>> {
        self.shared
            .dataflows
            .lock()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Rebuilds a live object from its persisted definition.
    async fn rebuild(&self, def: &Definition) -> Result<Entry> {
        let session = self.session();
        let parsed = self
            .shared
            .parser
            .parse_single(&def.sql)?
            .ok_or_else(|| crate::internal!("empty definition of {}", def.name))?;
        let provider: Arc<dyn datafusion::catalog::TableProvider> =
            match (&def.kind, parsed.statement) {
                (ObjectKind::Table, Statement::CreateTable(stmt)) => {
                    let plan = session.plan(*stmt).await?;
                    let defaults = match plan {
                        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
                            c.column_defaults.into_iter().collect()
                        }
                        _ => HashMap::new(),
                    };
                    let table =
                        StoredTable::open(&self.shared.catalog.storage_dir(def.id), defaults)?;
                    Arc::new(TableHandle(Arc::new(table)))
                }
                (ObjectKind::View, Statement::CreateView(stmt)) => {
                    let plan = session.plan(*stmt).await?;
                    view_provider(plan)?
                }
                (ObjectKind::MaterializedView, Statement::CreateMaterializedView(stmt)) => {
                    let (contents, dataflow) =
                        session.build_materialized_view(&stmt, def.id).await?;
                    self.register_dataflow(&def.name, dataflow);
                    Arc::new(crate::operators::ViewTable::new(contents))
                }
                (ObjectKind::Sink, Statement::CreateSink(create)) => {
                    let (runtime, _) = session.build_sink(&create, def.id, false).await?;
                    self.register_sink(&def.name, runtime.clone());
                    Arc::new(crate::connectors::sinks::SinkTable::new(runtime))
                }
                (ObjectKind::Table, Statement::CreateExternalTable(create)) => {
                    session.build_external_table(&create).await?
                }
                (ObjectKind::Source, Statement::CreateSource(create)) => {
                    Arc::new(crate::connectors::SourceTable::new(
                        session.build_source(&create, false).await?,
                    ))
                }
                (kind, _) => {
                    return Err(crate::internal!(
                        "catalog entry {} of kind {kind} has a mismatched definition",
                        def.name
                    ));
                }
            };
        Ok(Entry {
            def: def.clone(),
            provider,
        })
    }
}

/// Builds the session state every session starts from: runnel's catalog as
/// `runnel.public`, PostgreSQL's `pg_catalog`, `information_schema`, the
/// system tables in `runnel_catalog`, and the PostgreSQL functions clients
/// call on connect.
fn build_state(config: &Config, catalog: &Arc<Catalog>) -> Result<SessionState> {
    let session_config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, SCHEMA_NAME)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(false)
        .with_target_partitions(config.target_partitions);
    // No cache of file listings: a sink's new files must show in the next
    // query of its archive.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        )
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    let db_catalog = ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| crate::internal!("default catalog missing"))?;
    db_catalog.register_schema(SCHEMA_NAME, Arc::new(CatalogSchema(catalog.clone())))?;
    RunnelPgCatalog::install(&ctx, catalog.clone())?;
    db_catalog.register_schema(
        "information_schema",
        Arc::new(InformationSchema::new(catalog.clone())),
    )?;
    db_catalog.register_schema(
        crate::catalog::SYSTEM_SCHEMA,
        Arc::new(crate::catalog::SystemSchema::new(catalog.clone())),
    )?;
    functions::register_database_functions(&ctx);
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_type_planner(Arc::new(types::RunnelTypePlanner::default()))
        .build();
    Ok(state)
}

/// A view's TableProvider from its CREATE VIEW plan.
fn view_provider(plan: LogicalPlan) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateView(v)) => {
            Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
                v.input.as_ref().clone(),
                v.definition.clone(),
            )))
        }
        other => Err(crate::internal!(
            "expected a CREATE VIEW plan, got {}",
            other.display()
        )),
    }
}

/// Catalog names of every relation a statement mentions, in order.
/// True when `plan` scans a source (directly or through a view).
fn reads_a_source(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && (provider.as_ref() as &dyn std::any::Any)
                .downcast_ref::<crate::connectors::SourceTable>()
                .is_some()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether `plan` computes proto-sessions (the SESSION rewrite), which only
/// the streaming planner can merge into sessions.
fn calls_session_end(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|e| {
            found |= crate::planner::calls_session_end(e);
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

fn statement_relations(statement: &ast::Statement) -> Vec<String> {
    let mut names = Vec::new();
    let _ = ast::visit_relations(statement, |relation| {
        if let Ok(name) = crate::sql::object_name(relation)
            && !names.contains(&name)
        {
            names.push(name);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    names
}

/// A forward-only cursor opened by DECLARE.
struct Cursor {
    schema: SchemaRef,
    /// Behind a mutex only so that `Session` is `Sync`; always reached
    /// through `get_mut`.
    stream: tokio::sync::Mutex<SendableRecordBatchStream>,
    /// Rows read from the stream but not yet returned: a FETCH interrupted
    /// while it waits for more rows (a cursor over a live source or a
    /// SUBSCRIBE) loses none of them.
    pending: std::collections::VecDeque<RecordBatch>,
}

/// One client's conversation with the database.
pub struct Session {
    db: Database,
    ctx: SessionContext,
    settings: Arc<RwLock<Settings>>,
    info: SessionInfo,
    cursors: HashMap<String, Cursor>,
}

impl Session {
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The current value of a setting (`None` when unknown).
    pub fn setting(&self, name: &str) -> Option<String> {
        self.settings.read().ok()?.get(name)
    }

    /// ParameterStatus values to send after authentication.
    pub fn startup_parameters(&self) -> Vec<(String, String)> {
        self.settings
            .read()
            .map(|s| s.startup_parameters())
            .unwrap_or_default()
    }

    /// The statement timeout in force, if any.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let ms = parse_duration_ms(&self.setting("statement_timeout")?).ok()?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// Parses and runs every statement of `sql`, stopping at the first error.
    pub async fn execute(&mut self, sql: &str) -> Result<Vec<Output>> {
        let statements = self.db.parser().parse(sql)?;
        let mut outputs = Vec::with_capacity(statements.len());
        for statement in statements {
            outputs.push(self.execute_statement(&statement, None).await?);
        }
        Ok(outputs)
    }

    /// Runs every statement of `sql` and collects row results (for tests and
    /// tools): one `Vec<RecordBatch>` per statement.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for output in self.execute(sql).await? {
            if let Output::Rows(rows) = output {
                batches.extend(rows.collect().await?);
            }
        }
        Ok(batches)
    }

    /// Plans a parsed sqlparser statement with DataFusion.
    pub async fn plan(&self, statement: ast::Statement) -> Result<LogicalPlan> {
        Ok(self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await?)
    }

    /// Plans a statement for the extended protocol: `Some(plan)` for
    /// statements DataFusion plans (queries and INSERT), so their parameter
    /// and result types can be described before execution.
    pub async fn prepare(&self, statement: &ParsedStatement) -> Result<Option<LogicalPlan>> {
        match &statement.statement {
            Statement::Query(s) | Statement::Insert(s) => Ok(Some(self.plan((**s).clone()).await?)),
            _ => Ok(None),
        }
    }

    /// Runs one statement. `prepared` is the plan from [`Session::prepare`]
    /// with its parameters bound, when the extended protocol is used.
    pub async fn execute_statement(
        &mut self,
        statement: &ParsedStatement,
        prepared: Option<(LogicalPlan, ParamValues)>,
    ) -> Result<Output> {
        match &statement.statement {
            Statement::Query(s) => {
                let plan = self.bound_plan(s, prepared).await?;
                self.run_query(plan).await.map(Output::Rows)
            }
            Statement::Insert(s) => {
                let plan = self.bound_plan(s, prepared).await?;
                let rows = count_rows(self.run_query(plan).await?).await?;
                Ok(Output::Command(Command::new(format!("INSERT 0 {rows}"))))
            }
            Statement::CreateTable(s) => self.create_table(s, &statement.sql).await,
            Statement::CreateView(s) => self.create_view(s, &statement.sql).await,
            Statement::CreateSource(s) => self.create_source(s, &statement.sql).await,
            Statement::CreateSink(s) => self.create_sink(s, &statement.sql).await,
            Statement::CreateExternalTable(s) => {
                self.create_external_table(s, &statement.sql).await
            }
            Statement::Drop(d) => self.drop_objects(d).await,
            Statement::CopyFrom(c) => Ok(Output::CopyIn(CopyIn::try_new(self, c)?)),
            Statement::CopyTo(c) => self.copy_to(c).await,
            Statement::Set { name, value } => self.set(name, value),
            Statement::Show { name } => self.show(name),
            Statement::ShowObjects(kind) => self.show_objects(*kind),
            Statement::Reset { name } => {
                let reported = self.settings_mut()?.reset(name.as_deref())?;
                Ok(Output::Command(
                    Command::new("RESET").with_parameter_status(reported),
                ))
            }
            Statement::Discard => {
                self.cursors.clear();
                let reported = self.settings_mut()?.reset(None)?;
                Ok(Output::Command(
                    Command::new("DISCARD ALL").with_parameter_status(reported),
                ))
            }
            Statement::Begin => Ok(Output::TransactionStart("BEGIN".into())),
            Statement::Commit => Ok(Output::TransactionEnd("COMMIT".into())),
            Statement::Rollback => Ok(Output::TransactionEnd("ROLLBACK".into())),
            Statement::DeclareCursor { name, query } => {
                let rows = match query {
                    crate::sql::CursorQuery::Select(q) => {
                        let plan = self.plan(ast::Statement::Query(q.clone())).await?;
                        self.run_query(plan).await?
                    }
                    crate::sql::CursorQuery::Subscribe(s) => self.subscribe(s)?,
                };
                self.cursors.insert(
                    name.clone(),
                    Cursor {
                        schema: rows.schema.clone(),
                        stream: tokio::sync::Mutex::new(rows.stream),
                        pending: std::collections::VecDeque::new(),
                    },
                );
                Ok(Output::Command(Command::new("DECLARE CURSOR")))
            }
            Statement::Fetch { name, count } => self.fetch(name, *count).await,
            Statement::CloseCursor { name } => {
                match name {
                    None => self.cursors.clear(),
                    Some(n) => {
                        self.cursors.remove(n).ok_or_else(|| no_cursor(n))?;
                    }
                }
                Ok(Output::Command(Command::new("CLOSE CURSOR")))
            }
            Statement::Flush => self.flush().await,
            Statement::Checkpoint => {
                self.db.checkpoint_and_commit().await?;
                Ok(Output::Command(Command::new("CHECKPOINT")))
            }
            Statement::Subscribe(s) => self.subscribe(s).map(Output::Rows),
            Statement::ExplainMaterializedView(target) => {
                self.explain_materialized_view(target).await
            }
            Statement::CreateMaterializedView(s) => {
                self.create_materialized_view(s, &statement.sql).await
            }
            // Prepared statements belong to the wire protocol, which handles
            // DEALLOCATE itself; a session on its own has none.
            Statement::Deallocate { name: None } => {
                Ok(Output::Command(Command::new("DEALLOCATE ALL")))
            }
            Statement::Deallocate { name: Some(name) } => Err(Error::Plan {
                sqlstate: "26000",
                message: format!("prepared statement \"{name}\" does not exist"),
            }),
        }
    }

    async fn bound_plan(
        &self,
        statement: &ast::Statement,
        prepared: Option<(LogicalPlan, ParamValues)>,
    ) -> Result<LogicalPlan> {
        match prepared {
            Some((plan, params)) => Ok(plan.replace_params_with_values(&params)?),
            None => self.plan(statement.clone()).await,
        }
    }

    /// Executes a read plan lazily: rows are produced as the client reads.
    async fn run_query(&self, plan: LogicalPlan) -> Result<Rows> {
        if let LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) = plan {
            return Err(crate::unsupported!(
                "statement is not supported: {}",
                plan.display()
            ));
        }
        if calls_session_end(&plan) {
            return Err(Error::Unsupported(
                "SESSION windows are computed only by materialized views \
                 (CREATE MATERIALIZED VIEW ... GROUP BY SESSION(ts, gap), ...)"
                    .into(),
            ));
        }
        if reads_a_source(&plan) {
            // Rows of a live source keep their arrival order: no round-robin
            // repartitioning between the reader and the client.
            let mut state = self.ctx.state();
            state
                .config_mut()
                .options_mut()
                .optimizer
                .enable_round_robin_repartition = false;
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            let physical = state.create_physical_plan(&plan).await?;
            // A filter must not hold matching rows back to fill a batch.
            let physical = crate::connectors::unbatched_filters(physical)?;
            let stream = datafusion::physical_plan::execute_stream(physical, self.ctx.task_ctx())?;
            return Ok(Rows::new(schema, stream, "SELECT"));
        }
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await?;
        Ok(Rows::new(schema, stream, "SELECT"))
    }

    async fn copy_to(&mut self, copy: &crate::sql::CopyTo) -> Result<Output> {
        let query = match &copy.source {
            crate::sql::CopySource::Query(q) => ast::Statement::Query(q.clone()),
            crate::sql::CopySource::Subscribe(s) => {
                return Ok(Output::CopyOut(CopyOut {
                    rows: self.subscribe(s)?,
                    format: copy.format.clone(),
                }));
            }
            crate::sql::CopySource::Table { name, columns } => {
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let sql = format!("SELECT {cols} FROM \"{}\"", name.replace('"', "\"\""));
                let parsed = self.db.parser().parse_single(&sql)?;
                match parsed.map(|p| p.statement) {
                    Some(Statement::Query(q)) => *q,
                    _ => return Err(crate::internal!("COPY query did not parse")),
                }
            }
        };
        let plan = self.plan(query).await?;
        let rows = self.run_query(plan).await?;
        Ok(Output::CopyOut(CopyOut {
            rows,
            format: copy.format.clone(),
        }))
    }

    fn set(&mut self, name: &str, value: &SetValue) -> Result<Output> {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("datafusion.") {
            let value = match value {
                SetValue::Value(v) => v.clone(),
                SetValue::Default => {
                    return Err(crate::unsupported!(
                        "SET {name} TO DEFAULT is not supported"
                    ));
                }
            };
            let state = self.ctx.state_ref();
            let mut state = state.write();
            state.config_mut().options_mut().set(&lower, &value)?;
            return Ok(Output::Command(Command::new("SET")));
        }
        let reported = match value {
            SetValue::Default => self.settings_mut()?.reset(Some(name))?.into_iter().next(),
            SetValue::Value(v) => {
                let reported = self.settings_mut()?.set(name, v)?;
                if lower == "timezone" || lower == "time zone" {
                    self.apply_time_zone(v)?;
                }
                reported
            }
        };
        Ok(Output::Command(
            Command::new("SET").with_parameter_status(reported.into_iter().collect()),
        ))
    }

    /// Makes timestamptz values render in the session's time zone.
    fn apply_time_zone(&self, tz: &str) -> Result<()> {
        let offset = if tz.eq_ignore_ascii_case("utc") {
            "+00:00"
        } else {
            tz
        };
        let state = self.ctx.state_ref();
        let mut state = state.write();
        state
            .config_mut()
            .options_mut()
            .set("datafusion.execution.time_zone", offset)
            .map_err(|e| Error::data("22023", format!("invalid time zone \"{tz}\": {e}")))
    }

    /// The columns a statement returns, without running it (`None` for
    /// statements that return no rows). `plan` is from [`Session::prepare`].
    pub fn describe(
        &self,
        statement: &Statement,
        plan: Option<&LogicalPlan>,
    ) -> Result<Option<SchemaRef>> {
        Ok(match statement {
            Statement::Query(_) => plan.map(|p| Arc::new(p.schema().as_arrow().clone())),
            Statement::Show { name } if name.eq_ignore_ascii_case("all") => Some(show_all_schema()),
            Statement::Show { name } => Some(show_schema(name)),
            Statement::ShowObjects(_) => Some(objects_schema()),
            Statement::Subscribe(s) => Some(self.subscribe_schema(s)?),
            Statement::ExplainMaterializedView(_) => Some(Arc::new(Schema::new(vec![Field::new(
                "QUERY PLAN",
                DataType::Utf8,
                false,
            )]))),
            Statement::Fetch { name, .. } => Some(
                self.cursors
                    .get(name)
                    .ok_or_else(|| no_cursor(name))?
                    .schema
                    .clone(),
            ),
            _ => None,
        })
    }

    /// Applies a parameter the client sent in its startup message.
    pub fn set_startup_parameter(&mut self, name: &str, value: &str) -> Result<()> {
        self.set(name, &SetValue::Value(value.to_string()))
            .map(|_| ())
    }

    async fn fetch(&mut self, name: &str, count: Option<u64>) -> Result<Output> {
        let cursor = self.cursors.get_mut(name).ok_or_else(|| no_cursor(name))?;
        let wanted = count.map(|c| c as usize).unwrap_or(usize::MAX);
        let mut buffered: usize = cursor.pending.iter().map(RecordBatch::num_rows).sum();
        while buffered < wanted {
            match cursor.stream.get_mut().next().await {
                Some(batch) => {
                    let batch = batch?;
                    buffered += batch.num_rows();
                    cursor.pending.push_back(batch);
                }
                None => break,
            }
        }
        let mut out = Vec::new();
        let mut left = wanted;
        while left > 0
            && let Some(batch) = cursor.pending.pop_front()
        {
            if batch.num_rows() > left {
                out.push(batch.slice(0, left));
                cursor
                    .pending
                    .push_front(batch.slice(left, batch.num_rows() - left));
                left = 0;
            } else {
                left -= batch.num_rows();
                out.push(batch);
            }
        }
        Ok(Output::Rows(rows_from_batches(
            cursor.schema.clone(),
            out,
            "FETCH",
        )))
    }

    fn settings_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, Settings>> {
        self.settings
            .write()
            .map_err(|_| crate::internal!("settings lock poisoned"))
    }
}

fn no_cursor(name: &str) -> Error {
    Error::Plan {
        sqlstate: "34000",
        message: format!("cursor \"{name}\" does not exist"),
    }
}

/// The catalog name of a DataFusion table reference.
fn relation_name(name: &TableReference) -> Result<String> {
    match name.schema() {
        None => Ok(name.table().to_string()),
        Some(s) if s == SCHEMA_NAME => Ok(name.table().to_string()),
        Some(s) => Err(Error::catalog(
            CatalogErrorKind::UndefinedObject,
            format!("schema \"{s}\" does not exist (runnel keeps user objects in \"public\")"),
        )),
    }
}

/// Drains a DML result stream (one row with a `count` column).
async fn count_rows(rows: Rows) -> Result<u64> {
    let batches = rows.collect().await?;
    let mut total = 0;
    for batch in batches {
        if let Some(col) = batch.column_by_name("count").and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        }) {
            total += col.iter().flatten().sum::<u64>();
        }
    }
    Ok(total)
}

fn string_batch(schema: SchemaRef, columns: Vec<Vec<String>>) -> Result<RecordBatch> {
    let arrays = columns
        .into_iter()
        .map(|c| Arc::new(datafusion::arrow::array::StringArray::from(c)) as _)
        .collect();
    Ok(RecordBatch::try_new(schema, arrays)?)
}
