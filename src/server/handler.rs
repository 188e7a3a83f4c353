//! pgwire's query handlers for one connection: the simple and the extended
//! protocol both parse with the database's one parser and run statements
//! through the connection's [`Session`]; COPY data flows through here too.
//!
//! Every running statement can be interrupted by a CancelRequest, the
//! session's statement_timeout or the client going away, both while it is
//! planned and while its rows stream to the client. Rows and COPY data are
//! sent by `send`, which writes each batch out as it is produced; the simple
//! protocol answers each statement before running the next.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Sink, SinkExt, StreamExt, stream};
use pgwire::api::copy::{CopyHandler, send_copy_in_response, send_copy_out_response};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{CopyResponse, FieldInfo, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::extendedquery::{Parse, ParseComplete};
use pgwire::messages::response::{EmptyQueryResponse, NoticeResponse};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::ParameterStatus;
use pgwire::types::format::FormatOptions;

use super::Connection;
use super::encode::{CopyRows, pg_fields};
use super::error::{from_pg_error, to_pg_error};
use super::send::{Batches, CopySet, RowSet, send_copy_out, send_rows};
use crate::database::Output;
use crate::error::Error;
use crate::sql::{ParsedStatement, Statement};

/// Resolves with the reason when the running statement must stop.
type Interrupt = Shared<BoxFuture<'static, &'static str>>;

/// What one statement gives the client.
enum Reply {
    /// A response pgwire sends as it is.
    Done(Response),
    /// Rows, sent as they are produced.
    Rows(RowSet),
    /// COPY TO STDOUT data, sent as it is produced.
    CopyOut(CopySet),
}

/// A statement prepared by the extended protocol's Parse.
#[derive(Clone, Debug)]
pub struct Prepared {
    parsed: ParsedStatement,
    /// DataFusion's plan, with `$n` placeholders, for queries and INSERT.
    plan: Option<LogicalPlan>,
    /// Parameter types as told to the client.
    param_types: Vec<Type>,
    /// Parameter types as DataFusion inferred them.
    inferred: Vec<Option<DataType>>,
    /// Result columns, for statements that return rows.
    schema: Option<SchemaRef>,
}

impl Connection {
    /// A future that fires on CancelRequest, statement_timeout or the
    /// client closing the connection.
    async fn interrupt(&self, timeout: Option<std::time::Duration>) -> Interrupt {
        let handle = self
            .cancel
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|(handle, _)| handle.clone()));
        let cancel = match handle {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        let hangup = self.hangup.clone();
        async move {
            let canceled = async move {
                if let Some(rx) = cancel
                    && rx.await.is_ok()
                {
                    return "user request";
                }
                futures::future::pending().await
            };
            let timed_out = async move {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => futures::future::pending().await,
                }
                "statement timeout"
            };
            let gone = async move {
                hangup.closed().await;
                "the client disconnecting"
            };
            tokio::select! {
                r = canceled => r,
                r = timed_out => r,
                r = gone => r,
            }
        }
        .boxed()
        .shared()
    }

    /// Runs one statement and says what to send the client. Rows are not
    /// read yet: they are produced as they are sent.
    async fn run<C>(
        &self,
        client: &mut C,
        statement: &ParsedStatement,
        prepared: Option<(LogicalPlan, datafusion::common::ParamValues)>,
        format: &Format,
    ) -> PgWireResult<Reply>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.session.lock().await;
        let session = guard
            .as_mut()
            .ok_or_else(|| to_pg_error(&crate::internal!("query before startup finished")))?;
        let interrupt = self.interrupt(session.statement_timeout()).await;
        let options = Arc::new(format_options(session));
        let output = tokio::select! {
            output = session.execute_statement(statement, prepared) => output,
            reason = interrupt.clone() => Err(Error::Canceled(reason)),
        };
        drop(guard);
        let output = output.map_err(|e| to_pg_error(&e))?;
        Ok(match output {
            Output::Rows(rows) => Reply::Rows(RowSet {
                fields: Arc::new(pg_fields(&rows.schema, format, Some(options))?),
                batches: interruptible(rows.stream, interrupt),
                tag: rows.tag,
            }),
            Output::Command(command) => {
                for notice in command.notices {
                    let info = ErrorInfo::new("NOTICE".into(), "00000".into(), notice);
                    client
                        .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                            info,
                        )))
                        .await?;
                }
                for (name, value) in command.parameter_status {
                    client
                        .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                            name, value,
                        )))
                        .await?;
                }
                Reply::Done(Response::Execution(Tag::new(&command.tag)))
            }
            Output::TransactionStart(tag) => {
                Reply::Done(Response::TransactionStart(Tag::new(&tag)))
            }
            Output::TransactionEnd(tag) => Reply::Done(Response::TransactionEnd(Tag::new(&tag))),
            Output::CopyIn(copy) => {
                let columns = copy.column_count();
                *self.copy.lock().await = Some((copy, None));
                Reply::Done(Response::CopyIn(CopyResponse::new(
                    0,
                    columns,
                    stream::empty(),
                )))
            }
            Output::CopyOut(copy) => {
                let fields = Arc::new(pg_fields(
                    &copy.rows.schema,
                    &Format::UnifiedText,
                    Some(options),
                )?);
                Reply::CopyOut(CopySet {
                    rows: CopyRows::new(fields.clone(), &copy.format),
                    fields,
                    batches: interruptible(copy.rows.stream, interrupt),
                })
            }
        })
    }
}

impl Connection {
    /// DEALLOCATE: forgets prepared statements made with Parse.
    fn deallocate<C: ClientPortalStore>(&self, client: &C, name: Option<&str>) -> Response
    where
        C::PortalStore: PortalStore,
    {
        let mut names = match self.statement_names.lock() {
            Ok(names) => names,
            Err(_) => return error_response(to_pg_error(&crate::internal!("lock poisoned"))),
        };
        match name {
            None => {
                for n in names.drain() {
                    client.portal_store().rm_statement(&n);
                }
                Response::Execution(Tag::new("DEALLOCATE ALL"))
            }
            Some(n) if names.remove(n) => {
                client.portal_store().rm_statement(n);
                Response::Execution(Tag::new("DEALLOCATE"))
            }
            Some(n) => error_response(to_pg_error(&Error::Plan {
                sqlstate: "26000",
                message: format!("prepared statement \"{n}\" does not exist"),
            })),
        }
    }
}

/// How values are written as text, from the session's settings (read after
/// the statement ran, so that a SET takes effect for the next statement).
fn format_options(session: &crate::Session) -> FormatOptions {
    let mut options = FormatOptions::default();
    if let Some(v) = session.setting("datestyle") {
        options.date_style = v;
    }
    if let Some(v) = session.setting("intervalstyle") {
        options.interval_style = v;
    }
    if let Some(v) = session.setting("bytea_output") {
        options.bytea_output = v;
    }
    if let Some(v) = session.setting("timezone") {
        options.time_zone = v;
    }
    if let Some(v) = session
        .setting("extra_float_digits")
        .and_then(|v| v.parse().ok())
    {
        options.extra_float_digits = v;
    }
    options
}

/// A statement's batches, ending with a 57014 error as soon as `interrupt`
/// fires; the statement's stream (and what it holds, such as a source
/// reader or a subscription) is dropped right then.
fn interruptible(rows: SendableRecordBatchStream, interrupt: Interrupt) -> Batches {
    stream::unfold(Some((rows, interrupt)), |state| async move {
        let (mut rows, interrupt) = state?;
        tokio::select! {
            item = rows.next() => item.map(|item| {
                let item = item.map_err(|e| to_pg_error(&Error::from(e)));
                (item, Some((rows, interrupt)))
            }),
            reason = interrupt.clone() => Some((Err(to_pg_error(&Error::Canceled(reason))), None)),
        }
    })
    .boxed()
}

fn error_response(e: PgWireError) -> Response {
    match from_pg_error(e) {
        PgWireError::UserError(info) => Response::Error(info),
        other => Response::Error(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "XX000".into(),
            other.to_string(),
        ))),
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Runs the statements of a query string one at a time, sending each
    /// one's answer (rows as they are produced) before the next one runs.
    /// Replaces pgwire's default, which gathers every answer first and then
    /// sends rows without flushing them.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let statements = self
            .db
            .parser()
            .parse(&query.query)
            .map_err(|e| to_pg_error(&e))?;
        if statements.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for statement in &statements {
            let reply = match &statement.statement {
                Statement::Deallocate { name } => {
                    Reply::Done(self.deallocate(client, name.as_deref()))
                }
                _ => match self
                    .run(client, statement, None, &Format::UnifiedText)
                    .await
                {
                    Ok(reply) => reply,
                    Err(e) => Reply::Done(error_response(e)),
                },
            };
            if !send_simple(client, reply).await? {
                break;
            }
        }
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.set_state(PgWireConnectionState::ReadyForQuery);
            send_ready_for_query(client, client.transaction_status()).await?;
        }
        Ok(())
    }

    /// Not reached: `on_query` runs and answers each statement itself.
    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(to_pg_error(&crate::internal!(
            "simple queries are answered by on_query"
        )))
    }
}

/// Sends one statement's answer in the simple protocol; `false` when the
/// statements after it must not run (an error, or COPY FROM STDIN, whose
/// data comes next).
async fn send_simple<C>(client: &mut C, reply: Reply) -> PgWireResult<bool>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let response = match reply {
        Reply::Rows(set) => {
            let tag = set.tag;
            let rows = send_rows(client, set, true).await.map_err(from_pg_error)?;
            send_execution_response(client, Tag::new(tag).with_rows(rows)).await?;
            return Ok(true);
        }
        Reply::CopyOut(set) => {
            let rows = send_copy_out(client, set).await.map_err(from_pg_error)?;
            send_execution_response(client, Tag::new("COPY").with_rows(rows)).await?;
            return Ok(true);
        }
        Reply::Done(response) => response,
    };
    let status = client.transaction_status();
    match response {
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        Response::Query(results) => send_query_response(client, results, true).await?,
        Response::Execution(tag) => send_execution_response(client, tag).await?,
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            client.set_transaction_status(status.to_in_transaction_state());
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            client.set_transaction_status(status.to_idle_state());
        }
        Response::Error(e) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                .await?;
            client.set_transaction_status(status.to_error_state());
            return Ok(false);
        }
        Response::CopyIn(copy) => {
            send_copy_in_response(client, copy).await?;
            client.set_state(PgWireConnectionState::CopyInProgress(false));
            return Ok(false);
        }
        Response::CopyOut(copy) => send_copy_out_response(client, copy).await?,
        Response::CopyBoth(_) => {
            return Err(to_pg_error(&crate::internal!(
                "a statement asked for COPY BOTH"
            )));
        }
    }
    Ok(true)
}

/// Parses and plans statements for the extended protocol.
pub struct StatementParser {
    pub(super) db: crate::Database,
    pub(super) session: Arc<tokio::sync::Mutex<Option<crate::Session>>>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parsed = match self
            .db
            .parser()
            .parse_single(sql)
            .map_err(|e| to_pg_error(&e))?
        {
            Some(p) => p,
            None => return Ok(None),
        };
        let guard = self.session.lock().await;
        let session = guard
            .as_ref()
            .ok_or_else(|| to_pg_error(&crate::internal!("parse before startup finished")))?;
        let plan = session
            .prepare(&parsed)
            .await
            .map_err(|e| to_pg_error(&e))?;
        let schema = session
            .describe(&parsed.statement, plan.as_ref())
            .map_err(|e| to_pg_error(&e))?;
        let inferred = match &plan {
            Some(plan) => parameter_types(plan).map_err(|e| to_pg_error(&e))?,
            None => Vec::new(),
        };
        let count = inferred.len().max(types.len());
        let mut param_types = Vec::with_capacity(count);
        for i in 0..count {
            let ty = match (
                types.get(i).cloned().flatten(),
                inferred.get(i).cloned().flatten(),
            ) {
                (Some(t), _) if t != Type::UNKNOWN => t,
                (_, Some(dt)) => arrow_pg::datatypes::into_pg_type(&dt)?,
                _ => Type::TEXT,
            };
            param_types.push(ty);
        }
        Ok(Some(Prepared {
            parsed,
            plan,
            param_types,
            inferred,
            schema,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.schema {
            Some(schema) => pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(Vec::new()),
        }
    }
}

/// Casts decoded parameter values to the types DataFusion inferred for
/// them (a text parameter arrives as Utf8; a text column may be Utf8View).
fn coerce_params(params: ParamValues, inferred: &[Option<DataType>]) -> crate::Result<ParamValues> {
    let ParamValues::List(values) = params else {
        return Ok(params);
    };
    let values = values
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            if let Some(Some(target)) = inferred.get(i)
                && p.value.data_type() != *target
            {
                p.value = p
                    .value
                    .cast_to(target)
                    .map_err(|e| Error::data("22P02", format!("parameter ${}: {e}", i + 1)))?;
            }
            Ok(p)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(ParamValues::List(values))
}

/// The `$1..$n` parameter types DataFusion inferred, in order.
fn parameter_types(plan: &LogicalPlan) -> crate::Result<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types()?;
    let mut ordered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(id, ty)| {
            id.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|n| (n, ty))
        })
        .collect();
    ordered.sort_by_key(|(n, _)| *n);
    let count = ordered.last().map(|(n, _)| *n).unwrap_or(0);
    let mut out = vec![None; count];
    for (n, ty) in ordered {
        if n >= 1 {
            out[n - 1] = ty;
        }
    }
    Ok(out)
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    /// As pgwire's default, and remembers the statement's name so that
    /// DEALLOCATE ALL can find it.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        match StoredStatement::parse(client, &message, self.parser.clone()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != DEFAULT_NAME
            && let Ok(mut names) = self.statement_names.lock()
        {
            names.insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Without a row limit, rows (and COPY data) are sent here as they are
    /// produced and the statement completes with their count; with one,
    /// pgwire's portal hands them out `max_rows` at a time.
    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        if let Statement::Deallocate { name } = &prepared.parsed.statement {
            return Ok(self.deallocate(client, name.as_deref()));
        }
        let bound = match &prepared.plan {
            Some(plan) => {
                let inferred: Vec<Option<&DataType>> =
                    prepared.inferred.iter().map(|t| t.as_ref()).collect();
                let server: Vec<Option<&Type>> = prepared.param_types.iter().map(Some).collect();
                let params = arrow_pg::datatypes::df::deserialize_parameters_with_server_types(
                    portal, &inferred, &server,
                )
                .map_err(from_pg_error)?;
                let params =
                    coerce_params(params, &prepared.inferred).map_err(|e| to_pg_error(&e))?;
                Some((plan.clone(), params))
            }
            None => None,
        };
        let reply = self
            .run(
                client,
                &prepared.parsed,
                bound,
                &portal.result_column_format,
            )
            .await
            .map_err(from_pg_error)?;
        Ok(match reply {
            Reply::Done(response) => response,
            Reply::Rows(set) if max_rows > 0 => Response::Query(set.into_query_response()),
            Reply::Rows(set) => {
                let tag = set.tag;
                let rows = send_rows(client, set, false).await.map_err(from_pg_error)?;
                Response::Execution(Tag::new(tag).with_rows(rows))
            }
            Reply::CopyOut(set) => {
                let rows = send_copy_out(client, set).await.map_err(from_pg_error)?;
                Response::Execution(Tag::new("COPY").with_rows(rows))
            }
        })
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut copy = self.copy.lock().await;
        // After the first bad row, the rest of the data is read and dropped;
        // the error is reported when the client ends the COPY.
        if let Some((copy_in, error @ None)) = copy.as_mut()
            && let Err(e) = copy_in.push(&copy_data.data)
        {
            *error = Some(e);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let taken = self.copy.lock().await.take();
        let Some((copy_in, error)) = taken else {
            return Err(to_pg_error(&Error::Plan {
                sqlstate: "08P01",
                message: "COPY data received outside of COPY".into(),
            }));
        };
        if let Some(e) = error {
            return Err(to_pg_error(&e));
        }
        let rows = copy_in.finish().await.map_err(|e| to_pg_error(&e))?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows as usize).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, _client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.lock().await.take();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
