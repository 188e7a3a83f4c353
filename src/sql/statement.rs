//! The typed statement enum: what a query string means, decided once by the
//! parser and never re-derived from SQL text afterwards.
//!
//! Statements that DataFusion plans keep their sqlparser AST; statements that
//! only runnel understands carry their own small structs. This module holds
//! data only: no execution, no catalog access.

use std::fmt;

use datafusion::sql::sqlparser::ast;

/// One parsed SQL statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// SELECT / VALUES / WITH / EXPLAIN / SHOW-as-query: planned and run by
    /// DataFusion, returns rows.
    Query(Box<ast::Statement>),
    /// INSERT INTO ... VALUES / SELECT.
    Insert(Box<ast::Statement>),
    /// CREATE TABLE (with columns or AS SELECT).
    CreateTable(Box<ast::Statement>),
    /// CREATE VIEW (a stored query, expanded on read).
    CreateView(Box<ast::Statement>),
    /// CREATE MATERIALIZED VIEW: a query kept up to date incrementally.
    CreateMaterializedView(Box<ast::Statement>),
    /// EXPLAIN MATERIALIZED VIEW name / EXPLAIN CREATE MATERIALIZED VIEW ...:
    /// the view's operator graph.
    ExplainMaterializedView(ExplainTarget),
    /// CREATE SOURCE: a named, typed, unbounded stream read by a connector.
    CreateSource(Box<super::source::CreateSource>),
    /// CREATE SINK: a view's or a query's rows written continuously to
    /// files (Parquet).
    CreateSink(Box<super::sink::CreateSink>),
    /// CREATE EXTERNAL TABLE name STORED AS PARQUET LOCATION '...':
    /// DataFusion's table over files, kept in the catalog as a table.
    CreateExternalTable(Box<datafusion::sql::parser::CreateExternalTable>),
    /// DROP <kind> [IF EXISTS] name, ... [CASCADE].
    Drop(DropStatement),
    /// COPY table [(cols)] FROM STDIN.
    CopyFrom(CopyFrom),
    /// COPY table / (query) TO STDOUT.
    CopyTo(CopyTo),
    /// SET [SESSION | LOCAL] name { TO | = } value.
    Set { name: String, value: SetValue },
    /// SHOW name / SHOW ALL.
    Show { name: String },
    /// SHOW TABLES / VIEWS / MATERIALIZED VIEWS / SOURCES / SINKS.
    ShowObjects(ObjectKind),
    /// RESET name / RESET ALL (`None`).
    Reset { name: Option<String> },
    /// DISCARD ALL (and its narrower forms).
    Discard,
    /// BEGIN / START TRANSACTION.
    Begin,
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// DECLARE name CURSOR FOR query / FOR SUBSCRIBE ....
    DeclareCursor { name: String, query: CursorQuery },
    /// FETCH [count] FROM name. `count` is `None` for ALL.
    Fetch { name: String, count: Option<u64> },
    /// CLOSE name / CLOSE ALL (`None`).
    CloseCursor { name: Option<String> },
    /// FLUSH: wait until every view has processed all input available now.
    Flush,
    /// CHECKPOINT: take a checkpoint now and wait until it is complete (as
    /// in PostgreSQL, where it forces a checkpoint).
    Checkpoint,
    /// SUBSCRIBE [TO] view: the view's rows, then its changes, until the
    /// client cancels.
    Subscribe(Subscribe),
    /// DEALLOCATE [PREPARE] name / DEALLOCATE ALL (`None`): drops prepared
    /// statements, including those made with the extended protocol.
    Deallocate { name: Option<String> },
}

/// SUBSCRIBE [TO] view [WITH (snapshot = bool)].
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The materialized view.
    pub view: String,
    /// Whether the view's rows at the start come first (Materialize's
    /// `snapshot` option); without them only changes are sent.
    pub snapshot: bool,
}

/// What a cursor reads.
#[derive(Debug, Clone)]
pub enum CursorQuery {
    Select(Box<ast::Query>),
    Subscribe(Subscribe),
}

/// What an EXPLAIN of a materialized view describes.
#[derive(Debug, Clone)]
pub enum ExplainTarget {
    /// A running view, by name.
    Existing(String),
    /// A CREATE MATERIALIZED VIEW statement, planned but not run.
    Create(Box<ast::Statement>),
}

/// The value side of a SET.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    /// SET x TO DEFAULT: same as RESET x.
    Default,
    /// The value as text, as PostgreSQL reports it back with SHOW.
    Value(String),
}

/// The kinds of relation runnel keeps in its catalog. Each lists under its
/// own kind in psql's `\d` and in SHOW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Table,
    View,
    MaterializedView,
    Source,
    Sink,
}

impl ObjectKind {
    /// The noun used in messages and tags ("table", "materialized view").
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Source => "source",
            ObjectKind::Sink => "sink",
        }
    }

    /// The command tag of CREATE/DROP for this kind, e.g. "TABLE".
    pub fn tag(self) -> &'static str {
        match self {
            ObjectKind::Table => "TABLE",
            ObjectKind::View => "VIEW",
            ObjectKind::MaterializedView => "MATERIALIZED VIEW",
            ObjectKind::Source => "SOURCE",
            ObjectKind::Sink => "SINK",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

#[derive(Debug, Clone)]
pub struct DropStatement {
    pub kind: ObjectKind,
    pub if_exists: bool,
    pub names: Vec<String>,
    pub cascade: bool,
}

/// Text or CSV, with PostgreSQL's per-format defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: u8,
    pub null: String,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
}

impl CopyFormat {
    pub fn text() -> Self {
        CopyFormat {
            csv: false,
            delimiter: b'\t',
            null: "\\N".to_string(),
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }

    pub fn csv() -> Self {
        CopyFormat {
            csv: true,
            delimiter: b',',
            null: String::new(),
            header: false,
            quote: b'"',
            escape: b'"',
        }
    }
}

#[derive(Debug, Clone)]
pub struct CopyFrom {
    pub table: String,
    /// Target columns; empty means all, in table order.
    pub columns: Vec<String>,
    pub format: CopyFormat,
}

#[derive(Debug, Clone)]
pub enum CopySource {
    Table {
        name: String,
        columns: Vec<String>,
    },
    Query(Box<ast::Query>),
    /// COPY (SUBSCRIBE ...) TO STDOUT: a live view as COPY data.
    Subscribe(Subscribe),
}

#[derive(Debug, Clone)]
pub struct CopyTo {
    pub source: CopySource,
    pub format: CopyFormat,
}

impl Statement {
    /// The command tag PostgreSQL sends for this statement when it returns
    /// no rows (without the row count).
    pub fn command_tag(&self) -> String {
        match self {
            Statement::Query(_) => "SELECT".into(),
            Statement::Insert(_) => "INSERT".into(),
            Statement::CreateTable(_) => "CREATE TABLE".into(),
            Statement::CreateView(_) => "CREATE VIEW".into(),
            Statement::CreateSource(_) => "CREATE SOURCE".into(),
            Statement::CreateSink(_) => "CREATE SINK".into(),
            Statement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".into(),
            Statement::ExplainMaterializedView(_) => "EXPLAIN".into(),
            Statement::CreateMaterializedView(_) => "CREATE MATERIALIZED VIEW".into(),
            Statement::Drop(d) => format!("DROP {}", d.kind.tag()),
            Statement::CopyFrom(_) | Statement::CopyTo(_) => "COPY".into(),
            Statement::Set { .. } => "SET".into(),
            Statement::Show { .. } | Statement::ShowObjects(_) => "SHOW".into(),
            Statement::Reset { .. } => "RESET".into(),
            Statement::Discard => "DISCARD ALL".into(),
            Statement::Begin => "BEGIN".into(),
            Statement::Commit => "COMMIT".into(),
            Statement::Rollback => "ROLLBACK".into(),
            Statement::DeclareCursor { .. } => "DECLARE CURSOR".into(),
            Statement::Fetch { .. } => "FETCH".into(),
            Statement::CloseCursor { name: None } => "CLOSE CURSOR ALL".into(),
            Statement::CloseCursor { .. } => "CLOSE CURSOR".into(),
            Statement::Flush => "FLUSH".into(),
            Statement::Checkpoint => "CHECKPOINT".into(),
            Statement::Subscribe(_) => "SUBSCRIBE".into(),
            Statement::Deallocate { name: None } => "DEALLOCATE ALL".into(),
            Statement::Deallocate { .. } => "DEALLOCATE".into(),
        }
    }

    /// True for statements whose result is a row set planned by DataFusion,
    /// so that the extended protocol can describe it before execution.
    pub fn is_planned_query(&self) -> bool {
        matches!(self, Statement::Query(_))
    }
}
