//! What running a statement produces, independent of the wire protocol.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use super::CopyIn;
use crate::error::Result;
use crate::sql::CopyFormat;

/// The result of one statement.
pub enum Output {
    /// A row set, produced lazily as the client reads it.
    Rows(Rows),
    /// A statement that returns no rows.
    Command(Command),
    /// BEGIN: the client is now in a (no-op) transaction block.
    TransactionStart(String),
    /// COMMIT / ROLLBACK.
    TransactionEnd(String),
    /// COPY FROM STDIN: the client sends data next.
    CopyIn(CopyIn),
    /// COPY TO STDOUT: rows to send in COPY format.
    CopyOut(CopyOut),
}

/// A lazily produced row set.
pub struct Rows {
    pub schema: SchemaRef,
    pub stream: SendableRecordBatchStream,
    /// "SELECT", "FETCH" or "SHOW": the command tag sent with the row count.
    pub tag: &'static str,
}

impl Rows {
    pub fn new(schema: SchemaRef, stream: SendableRecordBatchStream, tag: &'static str) -> Self {
        Rows {
            schema,
            stream,
            tag,
        }
    }

    /// Reads every batch.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        Ok(self.stream.try_collect().await?)
    }
}

/// Rows that are already in memory.
pub fn rows_from_batches(schema: SchemaRef, batches: Vec<RecordBatch>, tag: &'static str) -> Rows {
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    Rows::new(
        schema.clone(),
        Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        tag,
    )
}

/// A statement's completion: its tag and what else the client should hear.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// The full command tag, e.g. "INSERT 0 3" or "CREATE TABLE".
    pub tag: String,
    /// ParameterStatus messages to send (name, value).
    pub parameter_status: Vec<(String, String)>,
    /// NOTICE messages to send before completion.
    pub notices: Vec<String>,
}

impl Command {
    pub fn new(tag: impl Into<String>) -> Self {
        Command {
            tag: tag.into(),
            ..Default::default()
        }
    }

    pub fn with_parameter_status(mut self, status: Vec<(String, String)>) -> Self {
        self.parameter_status.extend(status);
        self
    }

    pub fn with_notice(mut self, notice: String) -> Self {
        self.notices.push(notice);
        self
    }
}

/// COPY ... TO STDOUT: the rows and how to format them.
pub struct CopyOut {
    pub rows: Rows,
    pub format: CopyFormat,
}
