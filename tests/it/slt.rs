//! The SQL corpus: every `sql/**/*.slt` file runs twice, once in-process
//! through `runnel::Session` and once over the wire against the real server
//! with tokio-postgres' simple query protocol. Each file gets a fresh
//! database (and, over the wire, a fresh server) per driver.
//!
//! Run:            cargo test --test it slt
//! One file/dir:   RUNNEL_SLT_FILTER=views cargo test --test it slt
//! Complete mode:  RUNNEL_SLT_COMPLETE=1 cargo test --test it slt::in_process
//!   rewrites the expected output of the .slt files from the in-process
//!   driver's answers (the wire test does nothing in that mode, so it never
//!   reads a half-written file). Review every change against what
//!   PostgreSQL would answer before keeping it.
//! Check against PostgreSQL itself (scripts/test.sh starts a scratch
//! server and sets the variable; by hand, any role allowed to create
//! databases):
//!   RUNNEL_SLT_POSTGRES='host=/tmp/pg user=postgres dbname=postgres' \
//!     cargo test --test it slt::postgres
//!   Each file runs in a fresh database `runnel_slt` (dropped and made
//!   again), with TimeZone UTC. Records only runnel can answer are marked
//!   `onlyif runnel`, ones PostgreSQL answers differently by design
//!   `skipif postgres`. sql/known_divergences/ holds PostgreSQL's answers
//!   where runnel still differs, each `skipif runnel`: fixing one means
//!   deleting that line. Files under sql/streaming/ are skipped there:
//!   PostgreSQL has no sources or streaming materialized views, so each
//!   of those files checks its views against DataFusion's batch answer
//!   over the same rows instead.
//!
//! Conventions both drivers share, so that one expected output fits both:
//! - values are PostgreSQL's text encoding; NULL prints as `NULL` and the
//!   empty string as `(empty)`;
//! - errors read `"{sqlstate}: {message}"`, so files match on the code with
//!   `statement error 42P01` or `query error 22012: division by zero`;
//! - a multi-statement string answers with its last statement's result, as
//!   psql prints it; every earlier statement still runs first, in order;
//! - column types: the in-process driver knows the Arrow type of each column
//!   (`I` integers, `R` floats and numerics, `T` text, `?` anything else) and
//!   checks them strictly; the simple query protocol carries no types, so the
//!   wire driver reports `?` per column and checks only the column count.
//!
//! This module must not reach past `Database`/`Session` and the server's
//! text encoder into runnel's internals.

use std::fmt;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use sqllogictest::{
    AsyncDB, DBOutput, DefaultColumnType, Runner, default_normalizer, default_validator,
    strict_column_validator,
};
use tokio_postgres::SimpleQueryMessage;

use crate::harness::TestServer;

/// Set to rewrite expected outputs from the in-process driver.
const COMPLETE_VAR: &str = "RUNNEL_SLT_COMPLETE";
/// Set to run only the files whose path contains this text.
const FILTER_VAR: &str = "RUNNEL_SLT_FILTER";
/// A libpq connection string for the reference PostgreSQL run.
const POSTGRES_VAR: &str = "RUNNEL_SLT_POSTGRES";
/// The label `onlyif runnel` / `skipif runnel` test for on both drivers.
const RUNNEL_LABEL: &str = "runnel";

/// An error as both drivers report it: SQLSTATE first, then the message.
#[derive(Debug)]
pub struct SqlError {
    sqlstate: String,
    message: String,
}

impl SqlError {
    fn new(sqlstate: impl Into<String>, message: impl Into<String>) -> Self {
        SqlError {
            sqlstate: sqlstate.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.sqlstate, self.message)
    }
}

impl std::error::Error for SqlError {}

impl From<runnel::Error> for SqlError {
    fn from(e: runnel::Error) -> Self {
        SqlError::new(e.sqlstate(), e.to_string())
    }
}

/// One value as a cell of an expected-output line.
fn cell(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(v) => v.to_string(),
    }
}

/// The sqllogictest letter for an Arrow column type.
fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// The row count a command tag reports ("INSERT 0 3" → 3, "SELECT 2" → 2).
fn tag_count(tag: &str) -> u64 {
    let mut words = tag.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let last = words.last().unwrap_or_default();
    match verb {
        "INSERT" | "SELECT" | "UPDATE" | "DELETE" | "FETCH" | "MOVE" | "COPY" => {
            last.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// The in-process driver: one `Session` of a `Database`.
pub struct InProcess {
    db: runnel::Database,
    session: runnel::Session,
}

impl InProcess {
    /// Runs one statement and reads its result to the end.
    async fn run_statement(
        &mut self,
        statement: &runnel::sql::ParsedStatement,
    ) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let output = self.session.execute_statement(statement, None).await?;
        Ok(match output {
            runnel::Output::Rows(rows) => {
                let types = rows
                    .schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                let mut lines = Vec::new();
                for batch in rows.collect().await? {
                    let text = runnel::server::text_rows(&batch).map_err(|e| match e {
                        pgwire::error::PgWireError::UserError(info) => {
                            SqlError::new(info.code, info.message)
                        }
                        other => SqlError::new("XX000", other.to_string()),
                    })?;
                    lines.extend(
                        text.into_iter()
                            .map(|row| row.iter().map(|v| cell(v.as_deref())).collect()),
                    );
                }
                DBOutput::Rows { types, rows: lines }
            }
            runnel::Output::Command(command) => {
                DBOutput::StatementComplete(tag_count(&command.tag))
            }
            runnel::Output::TransactionStart(_) | runnel::Output::TransactionEnd(_) => {
                DBOutput::StatementComplete(0)
            }
            runnel::Output::CopyIn(_) | runnel::Output::CopyOut(_) => {
                return Err(SqlError::new(
                    "0A000",
                    "COPY cannot run in sqllogictest; test it over the wire",
                ));
            }
        })
    }
}

#[async_trait::async_trait]
impl AsyncDB for InProcess {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        // Statement by statement, each result read before the next starts,
        // as the server does for a simple query.
        let statements = self.db.parser().parse(sql)?;
        let mut last = DBOutput::StatementComplete(0);
        for statement in &statements {
            last = self.run_statement(statement).await?;
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "runnel-in-process"
    }

    fn error_sql_state(err: &SqlError) -> Option<String> {
        Some(err.sqlstate.clone())
    }
}

/// The wire driver: one tokio-postgres connection to a real server.
pub struct Wire {
    client: tokio_postgres::Client,
    engine: &'static str,
}

#[async_trait::async_trait]
impl AsyncDB for Wire {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => SqlError::new(db.code().code(), db.message()),
                None => SqlError::new("08000", format!("not a server error: {e}")),
            })?;
        // Only the last statement's messages: after the second-to-last
        // CommandComplete.
        let completes: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m, SimpleQueryMessage::CommandComplete(_)))
            .map(|(i, _)| i)
            .collect();
        let start = match completes.len() {
            0 | 1 => 0,
            n => completes[n - 2] + 1,
        };
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for message in &messages[start..] {
            match message {
                SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
                SimpleQueryMessage::Row(row) => {
                    rows.push((0..row.len()).map(|i| cell(row.get(i))).collect());
                }
                SimpleQueryMessage::CommandComplete(n) => count = *n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        self.engine
    }

    fn error_sql_state(err: &SqlError) -> Option<String> {
        Some(err.sqlstate.clone())
    }
}

/// The recovery driver: a wire connection to a server that, after every
/// materialized view or sink it creates, takes a checkpoint, is killed
/// with SIGKILL and restarted on the same data directory. Every streaming
/// file must still give its expected answers: state and source positions
/// come back from the checkpoint, which usually falls in the middle of a
/// view's input.
pub struct Recovering {
    server: Option<TestServer>,
    data_dir: PathBuf,
    wire: Wire,
}

/// Only checkpoints the driver asks for.
const RECOVERY_ARGS: &[&str] = &["--checkpoint-interval", "3600"];

impl Recovering {
    async fn start(data_dir: PathBuf) -> Result<Self, SqlError> {
        let dir = data_dir.clone();
        let server = tokio::task::spawn_blocking(move || TestServer::start_in(&dir, RECOVERY_ARGS))
            .await
            .map_err(|e| SqlError::new("08001", e.to_string()))?;
        let wire = Self::connect(&server).await?;
        Ok(Recovering {
            server: Some(server),
            data_dir,
            wire,
        })
    }

    async fn connect(server: &TestServer) -> Result<Wire, SqlError> {
        let (client, connection) = server
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| SqlError::new("08001", format!("connecting: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Wire {
            client,
            engine: "runnel-recovery",
        })
    }

    /// CHECKPOINT, SIGKILL, start again on the same directory.
    async fn crash_and_restart(&mut self) -> Result<(), SqlError> {
        self.wire.run("CHECKPOINT").await?;
        if let Some(mut old) = self.server.take() {
            old.kill9();
        }
        let dir = self.data_dir.clone();
        let server = tokio::task::spawn_blocking(move || TestServer::start_in(&dir, RECOVERY_ARGS))
            .await
            .map_err(|e| SqlError::new("08001", e.to_string()))?;
        self.wire = Self::connect(&server).await?;
        self.server = Some(server);
        Ok(())
    }
}

#[async_trait::async_trait]
impl AsyncDB for Recovering {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let out = self.wire.run(sql).await?;
        let upper = sql.trim_start().to_uppercase();
        if upper.starts_with("CREATE MATERIALIZED VIEW") || upper.starts_with("CREATE SINK") {
            self.crash_and_restart().await?;
        }
        Ok(out)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "runnel-recovery"
    }

    fn error_sql_state(err: &SqlError) -> Option<String> {
        Some(err.sqlstate.clone())
    }
}

/// The simple query protocol carries no column types: compare counts only.
#[allow(clippy::ptr_arg)] // the signature sqllogictest asks for
fn column_count_validator(
    actual: &Vec<DefaultColumnType>,
    expected: &Vec<DefaultColumnType>,
) -> bool {
    actual.len() == expected.len()
}

/// Every .slt file under sql/, sorted, narrowed by `RUNNEL_SLT_FILTER`.
fn slt_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("read a sql/ directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "slt") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    if let Ok(filter) = std::env::var(FILTER_VAR) {
        files.retain(|p| p.to_string_lossy().contains(&filter));
    }
    assert!(!files.is_empty(), "no .slt files under {}", root.display());
    files
}

/// Files under sql/streaming/: sources and materialized views, whose answers
/// are checked against the batch query in the same file rather than against
/// PostgreSQL.
fn is_streaming(file: &Path) -> bool {
    file.starts_with(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sql")
            .join("streaming"),
    )
}

/// Runs every record of `file`, going on past failures so that one run shows
/// all of them; stops at `halt`.
async fn run_file<D, M>(runner: &mut Runner<D, M>, file: &Path) -> Result<(), String>
where
    D: AsyncDB<ColumnType = DefaultColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    let records =
        sqllogictest::parse_file::<DefaultColumnType>(file).map_err(|e| format!("parse: {e}"))?;
    let mut errors = Vec::new();
    for record in records {
        if let sqllogictest::Record::Halt { .. } = record {
            break;
        }
        if let Err(e) = runner.run_async(record).await {
            errors.push(e.display(false).to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} failing records:\n{}",
            errors.len(),
            errors.join("\n")
        ))
    }
}

/// Panics listing every file that failed, after all files ran.
fn report(driver: &str, failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} .slt files failed with the {driver} driver:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process() {
    let complete = std::env::var(COMPLETE_VAR).is_ok_and(|v| v == "1");
    let files = slt_files();
    let mut failures = Vec::new();
    for file in &files {
        let dir = tempfile::tempdir().expect("create a data dir");
        let db = runnel::Database::open(runnel::Config::new(dir.path()))
            .await
            .expect("open a database");
        let connect_db = db.clone();
        let mut runner = Runner::new(move || {
            let db = connect_db.clone();
            async move {
                Ok::<_, SqlError>(InProcess {
                    session: db.session(),
                    db,
                })
            }
        });
        runner.with_column_validator(strict_column_validator);
        runner.add_label(RUNNEL_LABEL);
        let name = file.display();
        if complete {
            if let Err(e) = runner
                .update_test_file(
                    file,
                    " ",
                    default_validator,
                    default_normalizer,
                    strict_column_validator,
                )
                .await
            {
                failures.push(format!("{name}: completing failed: {e}"));
            }
        } else if let Err(e) = run_file(&mut runner, file).await {
            failures.push(format!("{name}: {e}"));
        }
        runner.shutdown_async().await;
        drop(runner);
        db.shutdown().await.expect("shut the database down");
    }
    report("in-process", failures, files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_wire() {
    if std::env::var(COMPLETE_VAR).is_ok_and(|v| v == "1") {
        eprintln!("{COMPLETE_VAR}=1: only the in-process driver runs while completing");
        return;
    }
    let files = slt_files();
    let mut failures = Vec::new();
    for file in &files {
        let mut server = tokio::task::spawn_blocking(TestServer::start)
            .await
            .expect("start a server");
        let mut runner = wire_runner(server.config(), "runnel-wire");
        runner.add_label(RUNNEL_LABEL);
        if let Err(e) = run_file(&mut runner, file).await {
            failures.push(format!(
                "{}: {e}\n--- server stderr ---\n{}",
                file.display(),
                server.stderr()
            ));
        }
        runner.shutdown_async().await;
        drop(runner);
        let status = server.stop().await;
        assert!(
            status.success(),
            "{}: server exited with {status}",
            file.display()
        );
    }
    report("wire", failures, files.len());
}

/// Every streaming file again, with a checkpoint, a SIGKILL and a restart
/// after each view or sink it creates (docs/design/0008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_with_recovery() {
    if std::env::var(COMPLETE_VAR).is_ok_and(|v| v == "1") {
        return;
    }
    let files: Vec<PathBuf> = slt_files()
        .into_iter()
        .filter(|f| is_streaming(f))
        .collect();
    let mut failures = Vec::new();
    for file in &files {
        let dir = tempfile::tempdir().expect("create a data dir");
        let data = dir.path().join("data");
        let mut runner = Runner::new(move || Recovering::start(data.clone()));
        runner.with_column_validator(column_count_validator);
        runner.add_label(RUNNEL_LABEL);
        if let Err(e) = run_file(&mut runner, file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
        runner.shutdown_async().await;
    }
    report("recovery", failures, files.len());
}

/// A runner whose connections are new tokio-postgres clients of `config`.
fn wire_runner(
    config: tokio_postgres::Config,
    engine: &'static str,
) -> Runner<Wire, impl sqllogictest::MakeConnection<Conn = Wire>> {
    let mut runner = Runner::new(move || {
        let config = config.clone();
        async move {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| SqlError::new("08001", format!("connecting: {e}")))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, SqlError>(Wire { client, engine })
        }
    });
    runner.with_column_validator(column_count_validator);
    runner
}

/// The corpus against a real PostgreSQL: the check that expected outputs
/// are PostgreSQL's answers. Needs `RUNNEL_SLT_POSTGRES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let conninfo = std::env::var(POSTGRES_VAR).unwrap_or_else(|_| {
        panic!(
            "set {POSTGRES_VAR} to a libpq connection string of a PostgreSQL server \
                 (scripts/test.sh starts one)"
        )
    });
    let admin_config: tokio_postgres::Config =
        conninfo.parse().expect("parse the connection string");
    let (admin, connection) = admin_config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // sql/streaming/ needs sources and materialized views, which PostgreSQL
    // does not have: those files are runnel-only (see `is_streaming`).
    let files: Vec<PathBuf> = slt_files()
        .into_iter()
        .filter(|f| !is_streaming(f))
        .collect();
    let mut failures = Vec::new();
    for file in &files {
        let database = "runnel_slt";
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await
            .expect("drop the scratch database");
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create the scratch database");
        let mut config = admin_config.clone();
        config.dbname(database).options("-c TimeZone=UTC");
        let mut runner = wire_runner(config, "postgres");
        if let Err(e) = run_file(&mut runner, file).await {
            failures.push(format!("{}: {e}", file.display()));
        }
        runner.shutdown_async().await;
    }
    report("postgres", failures, files.len());
}
