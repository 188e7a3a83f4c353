//! Sending a statement's rows to the client as they are produced.
//!
//! pgwire's own senders only `feed` messages: rows reach the socket when its
//! write buffer fills or the statement ends, which for a live result (a
//! continuous SELECT, SUBSCRIBE) may be never. Here every batch is written
//! out as soon as the next one is not ready yet: a slow stream sends each
//! batch when it exists, a fast one still fills whole buffers. Used for the
//! simple protocol, for an extended-protocol Execute without a row limit,
//! and for COPY TO STDOUT in both.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyDone, CopyOutResponse};
use pgwire::messages::data::RowDescription;

use super::encode::{CopyRows, encode_batch, row_stream};

/// A statement's batches, already wired to stop with an error when the
/// statement is interrupted.
pub type Batches = BoxStream<'static, PgWireResult<RecordBatch>>;

/// Rows of a query on their way to the client.
pub struct RowSet {
    pub fields: Arc<Vec<FieldInfo>>,
    pub batches: Batches,
    /// The command tag, sent with the row count.
    pub tag: &'static str,
}

impl RowSet {
    /// pgwire's lazily sent form, for a portal read `max_rows` at a time
    /// (each Execute's rows are flushed with its PortalSuspended).
    pub fn into_query_response(self) -> QueryResponse {
        let mut response =
            QueryResponse::new(self.fields.clone(), row_stream(self.fields, self.batches));
        response.set_command_tag(self.tag);
        response
    }
}

/// Rows of a COPY ... TO STDOUT on their way to the client.
pub struct CopySet {
    pub fields: Arc<Vec<FieldInfo>>,
    pub batches: Batches,
    pub rows: CopyRows,
}

/// Sends RowDescription (when `describe`, as the simple protocol does) and a
/// DataRow per row; returns how many rows were sent. The caller sends the
/// CommandComplete.
pub async fn send_rows<C>(client: &mut C, set: RowSet, describe: bool) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<C::Error>,
{
    let RowSet {
        fields,
        mut batches,
        ..
    } = set;
    if describe {
        let description = RowDescription::new(fields.iter().map(Into::into).collect());
        client
            .feed(PgWireBackendMessage::RowDescription(description))
            .await?;
    }
    let mut sent = 0;
    while let Some(batch) = next_or_flush(client, &mut batches).await? {
        for row in encode_batch(&fields, &batch?) {
            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// Sends CopyOutResponse, a CopyData per row and CopyDone; returns how many
/// rows were sent. An error ends the copy with an ErrorResponse (sent by
/// the caller), as PostgreSQL does. The caller sends the CommandComplete.
pub async fn send_copy_out<C>(client: &mut C, set: CopySet) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<C::Error>,
{
    let CopySet {
        fields,
        mut batches,
        mut rows,
    } = set;
    let columns = fields.len();
    client
        .feed(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0, // text, the only COPY TO format runnel writes
            columns as i16,
            vec![0; columns],
        )))
        .await?;
    if let Some(header) = rows.header() {
        client.feed(PgWireBackendMessage::CopyData(header)).await?;
    }
    let mut sent = 0;
    while let Some(batch) = next_or_flush(client, &mut batches).await? {
        for data in rows.encode(&batch?)? {
            client.feed(PgWireBackendMessage::CopyData(data)).await?;
            sent += 1;
        }
    }
    client
        .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(sent)
}

/// The next item of `items`; when it is not ready yet, first writes out
/// everything fed so far, so the client has it while the stream waits.
async fn next_or_flush<C, S>(client: &mut C, items: &mut S) -> PgWireResult<Option<S::Item>>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    PgWireError: From<C::Error>,
    S: Stream + Unpin,
{
    if let Some(item) = items.next().now_or_never() {
        return Ok(item);
    }
    client.flush().await?;
    Ok(items.next().await)
}
