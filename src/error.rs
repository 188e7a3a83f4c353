//! The one error type of runnel, grouped by what the user should do about it,
//! and its mapping to PostgreSQL SQLSTATE codes.
//!
//! Everything that can fail returns [`Result`]. The server turns an [`Error`]
//! into an ErrorResponse with [`Error::sqlstate`]; nothing else in the crate
//! knows about SQLSTATEs. This module must not depend on pgwire.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// `Result` with runnel's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by what the user should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse: fix the statement. `position` is a
    /// 1-based character offset into the query string, where known.
    #[error("{message}")]
    Syntax {
        message: String,
        position: Option<usize>,
    },
    /// The statement parses but refers to something that does not exist, or
    /// already exists: fix the name.
    #[error("{message}")]
    Catalog {
        kind: CatalogErrorKind,
        message: String,
    },
    /// The statement is valid SQL but cannot be planned (types, semantics).
    #[error("{message}")]
    Plan {
        sqlstate: &'static str,
        message: String,
    },
    /// The statement asks for something runnel does not do.
    #[error("{0}")]
    Unsupported(String),
    /// Bad data: a value that does not fit its type, division by zero, a
    /// malformed input record.
    #[error("{message}")]
    Data {
        sqlstate: &'static str,
        message: String,
    },
    /// The statement was canceled by the client or a timeout.
    #[error("canceling statement due to {0}")]
    Canceled(&'static str),
    /// A limit was hit (connections, memory).
    #[error("{message}")]
    Resources {
        sqlstate: &'static str,
        message: String,
    },
    /// Disk or network trouble outside the statement's control.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A failure inside the engine that no input should cause: a bug.
    #[error("internal error (this is a bug in runnel): {0}")]
    Internal(String),
}

/// Which catalog rule was broken; each has its own SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogErrorKind {
    UndefinedTable,
    UndefinedColumn,
    UndefinedObject,
    UndefinedFunction,
    DuplicateTable,
    DuplicateObject,
    DuplicateColumn,
    DependentObjects,
    InvalidDatabase,
}

impl CatalogErrorKind {
    fn sqlstate(self) -> &'static str {
        match self {
            Self::UndefinedTable => "42P01",
            Self::UndefinedColumn => "42703",
            Self::UndefinedObject => "42704",
            Self::UndefinedFunction => "42883",
            Self::DuplicateTable => "42P07",
            Self::DuplicateObject => "42710",
            Self::DuplicateColumn => "42701",
            Self::DependentObjects => "2BP01",
            Self::InvalidDatabase => "3D000",
        }
    }
}

impl Error {
    /// The five-character PostgreSQL error code for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax { .. } => "42601",
            Error::Catalog { kind, .. } => kind.sqlstate(),
            Error::Plan { sqlstate, .. } => sqlstate,
            Error::Unsupported(_) => "0A000",
            Error::Data { sqlstate, .. } => sqlstate,
            Error::Canceled(_) => "57014",
            Error::Resources { sqlstate, .. } => sqlstate,
            Error::Io { .. } => "58030",
            Error::Internal(_) => "XX000",
        }
    }

    /// Error cursor position (1-based, in characters) where known.
    pub fn position(&self) -> Option<usize> {
        match self {
            Error::Syntax { position, .. } => *position,
            _ => None,
        }
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        Error::Syntax {
            message: message.into(),
            position: None,
        }
    }

    pub fn catalog(kind: CatalogErrorKind, message: impl Into<String>) -> Self {
        Error::Catalog {
            kind,
            message: message.into(),
        }
    }

    pub fn plan(message: impl Into<String>) -> Self {
        Error::Plan {
            sqlstate: "42804",
            message: message.into(),
        }
    }

    pub fn data(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Error::Data {
            sqlstate,
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Returns a copy of this error with the syntax position shifted by
    /// `offset` characters (for statements cut out of a longer query string).
    pub fn shift_position(self, offset: usize) -> Self {
        match self {
            Error::Syntax {
                message,
                position: Some(p),
            } => Error::Syntax {
                message,
                position: Some(p + offset),
            },
            other => other,
        }
    }
}

/// Builds an [`Error::Unsupported`] from a format string.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { $crate::error::Error::Unsupported(format!($($arg)*)) };
}

/// Builds an [`Error::Internal`] from a format string.
#[macro_export]
macro_rules! internal {
    ($($arg:tt)*) => { $crate::error::Error::Internal(format!($($arg)*)) };
}

impl From<ParserError> for Error {
    fn from(e: ParserError) -> Self {
        let (message, position) = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
                let position = parse_line_column(&m);
                (strip_location(&m), position)
            }
            ParserError::RecursionLimitExceeded => {
                ("statement is too deeply nested".to_string(), None)
            }
        };
        // `position` here is (line, column); the parser turns it into an
        // offset into the statement text, see `sql::parser`.
        Error::Syntax {
            message: format!("syntax error: {message}"),
            position: position.map(|(l, c)| encode_line_col(l, c)),
        }
    }
}

/// sqlparser reports positions as "at Line: L, Column: C". Until the parser
/// resolves them against the query text they are kept packed in one number.
const LINE_FACTOR: usize = 1 << 32;

fn encode_line_col(line: usize, col: usize) -> usize {
    line * LINE_FACTOR + col
}

/// Turns a packed (line, column) from a parser error into a 1-based character
/// offset into `sql`.
pub(crate) fn resolve_line_col(packed: usize, sql: &str) -> usize {
    let (line, col) = (packed / LINE_FACTOR, packed % LINE_FACTOR);
    let mut offset = 0;
    for (i, text) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return offset + col.max(1);
        }
        offset += text.chars().count() + 1;
    }
    offset.max(1)
}

fn parse_line_column(message: &str) -> Option<(usize, usize)> {
    let idx = message.rfind("Line: ")?;
    let rest = &message[idx + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at Line: ") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        let sqlstate = match &e {
            ArrowError::DivideByZero => "22012",
            ArrowError::ArithmeticOverflow(_) => "22003",
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            ArrowError::InvalidArgumentError(_) => "22023",
            ArrowError::CsvError(_) | ArrowError::JsonError(_) => "22P04",
            ArrowError::IoError(_, _) => return Error::io("I/O error", std::io::Error::other(e)),
            ArrowError::MemoryError(_) => "53200",
            _ => "XX000",
        };
        if sqlstate == "XX000" {
            return Error::Internal(e.to_string());
        }
        Error::data(sqlstate, clean_arrow_message(&e))
    }
}

fn clean_arrow_message(e: &ArrowError) -> String {
    match e {
        ArrowError::DivideByZero => "division by zero".to_string(),
        ArrowError::CastError(m)
        | ArrowError::ParseError(m)
        | ArrowError::ArithmeticOverflow(m)
        | ArrowError::InvalidArgumentError(m)
        | ArrowError::CsvError(m)
        | ArrowError::JsonError(m) => m.clone(),
        other => other.to_string(),
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::Context(_, inner) => (*inner).into(),
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => inner.into(),
                Err(shared) => Error::Internal(shared.to_string()),
            },
            DataFusionError::Diagnostic(_, inner) => (*inner).into(),
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                errors.swap_remove(0).into()
            }
            DataFusionError::ArrowError(e, _) => (*e).into(),
            DataFusionError::SQL(e, _) => (*e).into(),
            DataFusionError::SchemaError(e, _) => schema_error(*e),
            DataFusionError::NotImplemented(m) => Error::Unsupported(m),
            DataFusionError::IoError(e) => Error::io("I/O error", e),
            DataFusionError::ParquetError(e) => {
                Error::io("Parquet error", std::io::Error::other(e))
            }
            DataFusionError::ObjectStore(e) => Error::io("storage error", std::io::Error::other(e)),
            DataFusionError::External(e) => match e.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => match other.downcast::<ArrowError>() {
                    Ok(arrow) => (*arrow).into(),
                    Err(other) => Error::Internal(other.to_string()),
                },
            },
            DataFusionError::ResourcesExhausted(m) => Error::Resources {
                sqlstate: "53200",
                message: m,
            },
            DataFusionError::Plan(m) => plan_error(m),
            DataFusionError::Configuration(m) => Error::Plan {
                sqlstate: "22023",
                message: m,
            },
            DataFusionError::Execution(m) => execution_error(m),
            DataFusionError::ExecutionJoin(e) => Error::Internal(e.to_string()),
            DataFusionError::Substrait(m) => Error::Unsupported(m),
            DataFusionError::Internal(m) => Error::Internal(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

fn schema_error(e: SchemaError) -> Error {
    let message = e.to_string();
    let message = message
        .strip_prefix("Schema error: ")
        .unwrap_or(&message)
        .to_string();
    match e {
        SchemaError::FieldNotFound { .. } => {
            Error::catalog(CatalogErrorKind::UndefinedColumn, message)
        }
        SchemaError::DuplicateQualifiedField { .. }
        | SchemaError::DuplicateUnqualifiedField { .. }
        | SchemaError::AmbiguousReference { .. } => {
            Error::catalog(CatalogErrorKind::DuplicateColumn, message)
        }
    }
}

/// DataFusion reports several distinct conditions as `Plan` errors with only
/// a message; the prefixes matched here are pinned by tests below so that an
/// upgrade that changes them fails loudly instead of degrading SQLSTATEs.
fn plan_error(message: String) -> Error {
    if message.starts_with("table '") && message.ends_with("' not found") {
        let name = &message["table '".len()..message.len() - "' not found".len()];
        let short = name.rsplit('.').next().unwrap_or(name);
        return Error::catalog(
            CatalogErrorKind::UndefinedTable,
            format!("relation \"{short}\" does not exist"),
        );
    }
    if let Some(rest) = message.strip_prefix("Cannot execute pipeline breaking queries, operator: ")
    {
        return unbounded_input(rest);
    }
    if message.starts_with("Invalid function") || message.contains("No function matches") {
        return Error::catalog(CatalogErrorKind::UndefinedFunction, message);
    }
    if message.contains("Cannot cast") || message.contains("Cannot infer common") {
        return Error::Plan {
            sqlstate: "42846",
            message,
        };
    }
    if message.starts_with("Unsupported")
        || message.contains("not supported")
        || message.starts_with("Correlated scalar subquery must be aggregated")
    {
        return Error::Unsupported(message);
    }
    if message.contains("already exists") {
        return Error::catalog(CatalogErrorKind::DuplicateTable, message);
    }
    Error::Plan {
        sqlstate: "42000",
        message,
    }
}

/// A query that must see all of its input before answering (an aggregate,
/// ORDER BY, a join that buffers a side) was given a source that never ends.
/// DataFusion names the operator at the start of a debug dump; keep only it.
fn unbounded_input(operator_dump: &str) -> Error {
    let operator = operator_dump
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("operator");
    let what = match operator {
        "AggregateExec" => "an aggregate",
        "SortExec" | "SortPreservingMergeExec" => "ORDER BY",
        o if o.contains("Join") => "this join",
        "WindowAggExec" | "BoundedWindowAggExec" => "a window function",
        _ => "this query",
    };
    Error::Unsupported(format!(
        "{what} needs all of its input, but a live source never ends ({operator}); \
         read a source with filters, projections and LIMIT, or aggregate it by event-time \
         windows in a materialized view"
    ))
}

fn execution_error(message: String) -> Error {
    if message.contains("more than one row") {
        return Error::data(
            "21000",
            "more than one row returned by a subquery used as an expression",
        );
    }
    if message.contains("Division by zero") || message.contains("Divide by zero") {
        return Error::data("22012", "division by zero");
    }
    if message.contains("overflow") {
        return Error::data("22003", message);
    }
    if message.contains("non-nullable") || message.contains("null value") {
        return Error::data("23502", message);
    }
    if message.contains("Cannot cast") || message.contains("Error parsing") {
        return Error::data("22P02", message);
    }
    Error::Data {
        sqlstate: "XX000",
        message,
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io("I/O error", e)
    }
}

/// Lets runnel errors travel through DataFusion APIs and come back intact.
impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// Displays an error the way psql prints it, for logs and tests.
pub struct Display<'a>(pub &'a Error);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR {}: {}", self.0.sqlstate(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn df_error(sql: &str) -> Error {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT)").await.unwrap();
        match ctx.sql(sql).await {
            Ok(df) => df.collect().await.unwrap_err().into(),
            Err(e) => e.into(),
        }
    }

    #[tokio::test]
    async fn datafusion_messages_map_to_sqlstates() {
        assert_eq!(df_error("SELECT * FROM nope").await.sqlstate(), "42P01");
        assert_eq!(df_error("SELECT b FROM t").await.sqlstate(), "42703");
        assert_eq!(df_error("SELECT nope_fn(1)").await.sqlstate(), "42883");
        assert_eq!(df_error("SELECT 1/0").await.sqlstate(), "22012");
        assert_eq!(
            df_error("SELECT CAST('x' AS INT)").await.sqlstate(),
            "22P02"
        );
    }

    #[test]
    fn parser_positions_resolve_to_offsets() {
        let sql = "SELECT 1;\nSELEC 2";
        let err: Error = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap_err()
        .into();
        let Error::Syntax {
            position: Some(p), ..
        } = err
        else {
            panic!("no position")
        };
        assert_eq!(resolve_line_col(p, sql), 11);
    }
}
