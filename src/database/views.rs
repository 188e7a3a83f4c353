//! CREATE MATERIALIZED VIEW: plan the query, start its dataflow, register
//! its contents; and FLUSH, which waits for every view to catch up.
//!
//! A view's dataflow is owned by the database (one per view, by name) and
//! stopped when the view is dropped. A restart rebuilds each view from the
//! last checkpoint (its state and its sources' positions), or, for a view
//! the checkpoint does not hold, from its sources' start positions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::sql::sqlparser::ast;

use super::{Command, Output, Session, statement_relations};
use crate::catalog::{Definition, Entry};
use crate::error::{CatalogErrorKind, Error, Result};
use crate::operators::{ViewContents, ViewTable};
use crate::sql::{ObjectKind, object_name};
use crate::stream::Dataflow;

impl Session {
    pub(super) async fn create_materialized_view(
        &mut self,
        statement: &ast::Statement,
        sql: &str,
    ) -> Result<Output> {
        let ast::Statement::CreateView(create) = statement else {
            return Err(crate::internal!("not a CREATE MATERIALIZED VIEW"));
        };
        let name = object_name(&create.name)?;
        let catalog = self.database().catalog().clone();
        if let Some(skip) =
            self.name_is_free(&name, create.if_not_exists, "CREATE MATERIALIZED VIEW")?
        {
            return Ok(skip);
        }
        let id = catalog.allocate_id()?;
        let created = async {
            let (contents, dataflow) = self.build_materialized_view(statement, id).await?;
            let depends_on = statement_relations(statement)
                .into_iter()
                .filter(|n| catalog.get(n).is_some())
                .collect();
            catalog.create(Entry {
                def: Definition {
                    id,
                    name: name.clone(),
                    kind: ObjectKind::MaterializedView,
                    sql: sql.to_string(),
                    depends_on,
                },
                provider: Arc::new(ViewTable::new(contents)),
            })?;
            Ok::<_, Error>(dataflow)
        }
        .await;
        // A view that was not created takes no part in checkpoints.
        let dataflow = created.inspect_err(|_| self.database().forget_checkpoints_of(id))?;
        self.database().register_dataflow(&name, dataflow);
        Ok(Output::Command(Command::new("CREATE MATERIALIZED VIEW")))
    }

    /// Plans the view's query into a dataflow and starts it.
    pub(super) async fn build_materialized_view(
        &self,
        statement: &ast::Statement,
        id: u64,
    ) -> Result<(Arc<ViewContents>, Dataflow)> {
        let ast::Statement::CreateView(create) = statement else {
            return Err(crate::internal!("not a CREATE MATERIALIZED VIEW"));
        };
        if create.or_replace {
            return Err(Error::Unsupported(
                "CREATE OR REPLACE MATERIALIZED VIEW is not supported; drop the view first".into(),
            ));
        }
        if !create.columns.is_empty() {
            return Err(Error::Unsupported(
                "a column list on CREATE MATERIALIZED VIEW is not supported; name columns with AS"
                    .into(),
            ));
        }
        let plan = self.stream_plan(create).await?;
        let parallelism = self.database().config().target_partitions;
        let contents = Arc::new(if plan.updating {
            ViewContents::try_new_updating(plan.schema.clone())?
        } else {
            ViewContents::new(plan.schema.clone())
        });
        if let Ok(mut g) = contents.graph.lock() {
            *g = plan.describe(parallelism);
        }
        let link = self
            .database()
            .checkpoint_link(crate::state::dataflow_owner(id));
        let dataflow = Dataflow::spawn(plan, contents.clone(), parallelism, link)?;
        Ok((contents, dataflow))
    }

    /// The contents of materialized view `name`: 42P01 when nothing has that
    /// name, 42809 with `not_a_view`'s message when it is something else.
    pub(super) fn materialized_view(
        &self,
        name: &str,
        not_a_view: impl FnOnce(ObjectKind) -> String,
    ) -> Result<Arc<ViewContents>> {
        let entry = self.database().catalog().get(name).ok_or_else(|| {
            Error::catalog(
                CatalogErrorKind::UndefinedTable,
                format!("relation \"{name}\" does not exist"),
            )
        })?;
        let provider: &dyn datafusion::catalog::TableProvider = entry.provider.as_ref();
        let view = (provider as &dyn std::any::Any)
            .downcast_ref::<ViewTable>()
            .ok_or_else(|| Error::Plan {
                sqlstate: "42809",
                message: not_a_view(entry.def.kind),
            })?;
        Ok(view.contents().clone())
    }

    /// Plans a view's query (with its WITH options) for streaming.
    async fn stream_plan(&self, create: &ast::CreateView) -> Result<crate::planner::StreamPlan> {
        let options = view_options(&create.options)?;
        let logical = self
            .plan(ast::Statement::Query(create.query.clone()))
            .await?;
        let state = self.ctx.state();
        crate::planner::plan(&state.optimize(&logical)?, &state, options)
    }

    /// The operator graph of a view, one line per row (PostgreSQL's
    /// EXPLAIN column name).
    pub(super) async fn explain_materialized_view(
        &self,
        target: &crate::sql::ExplainTarget,
    ) -> Result<Output> {
        let lines = match target {
            crate::sql::ExplainTarget::Existing(name) => {
                let view = self.materialized_view(name, |kind| {
                    format!("\"{name}\" is a {kind}, not a materialized view")
                })?;
                view.graph.lock().map(|g| g.clone()).unwrap_or_default()
            }
            crate::sql::ExplainTarget::Create(statement) => {
                let ast::Statement::CreateView(create) = statement.as_ref() else {
                    return Err(crate::internal!("not a CREATE MATERIALIZED VIEW"));
                };
                let plan = self.stream_plan(create).await?;
                plan.describe(self.database().config().target_partitions)
            }
        };
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "QUERY PLAN",
                datafusion::arrow::datatypes::DataType::Utf8,
                false,
            ),
        ]));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(datafusion::arrow::array::StringArray::from(lines))],
        )?;
        Ok(Output::Rows(super::rows_from_batches(
            schema,
            vec![batch],
            "EXPLAIN",
        )))
    }

    /// FLUSH: returns once every materialized view has processed all input
    /// available when it was issued, and every sink has committed it (a
    /// checkpoint is taken, which makes the sinks' files visible).
    pub(super) async fn flush(&self) -> Result<Output> {
        let db = self.database();
        let ticket = db.shared.flush_ticket.fetch_add(1, Ordering::SeqCst) + 1;
        let flows = db.dataflow_handles();
        let sinks = db.sink_handles();
        // Ask every view first: a view on a view waits for its upstream's
        // ticket to travel through the upstream's feed.
        for flow in &flows {
            flow.request_flush(ticket);
        }
        for sink in &sinks {
            sink.request_flush(ticket);
        }
        // A sink that cannot commit holds its view back; its failure ends
        // the wait instead of leaving FLUSH hanging.
        let views = async {
            for flow in flows {
                flow.wait_flushed(ticket).await?;
            }
            Ok::<_, Error>(())
        };
        let handed = futures::future::try_join_all(sinks.iter().map(|s| s.wait_flushed(ticket)));
        futures::future::try_join(views, handed).await?;
        if !sinks.is_empty() {
            db.checkpoint_and_commit().await?;
        }
        Ok(Output::Command(Command::new("FLUSH")))
    }
}

/// `CREATE MATERIALIZED VIEW v WITH (emit = 'on_update' | 'on_window_close',
/// allowed_lateness = '10 seconds') AS ...`.
fn view_options(options: &ast::CreateTableOptions) -> Result<crate::planner::ViewOptions> {
    let list = match options {
        ast::CreateTableOptions::None => return Ok(Default::default()),
        ast::CreateTableOptions::With(list) => list,
        other => {
            return Err(Error::Unsupported(format!(
                "materialized view options {other}; use WITH (emit = ..., allowed_lateness = ...)"
            )));
        }
    };
    let mut out = crate::planner::ViewOptions::default();
    for option in list {
        let ast::SqlOption::KeyValue { key, value } = option else {
            return Err(bad_option(format!("unsupported view option {option}")));
        };
        let key = key.value.to_lowercase();
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        match key.as_str() {
            "emit" => {
                out.emit_on_update = match text.to_lowercase().as_str() {
                    "on_update" => true,
                    "on_window_close" | "on_close" | "on_watermark" => false,
                    _ => {
                        return Err(bad_option(format!(
                            "emit must be 'on_update' or 'on_window_close', not '{text}'"
                        )));
                    }
                }
            }
            "allowed_lateness" => {
                // '10 seconds', '10s', or INTERVAL '10' SECOND.
                let normalized = text
                    .to_lowercase()
                    .replace("interval", "")
                    .replace('\'', "");
                let micros = crate::connectors::parse_duration(&normalized)
                    .map(|d| d.as_micros() as i64)
                    .ok_or_else(|| {
                        bad_option(format!(
                            "allowed_lateness must be an interval such as '10 seconds', not '{text}'"
                        ))
                    })?;
                if micros < 0 {
                    return Err(bad_option("allowed_lateness must not be negative".into()));
                }
                out.allowed_lateness = Some(micros);
            }
            _ => {
                return Err(bad_option(format!(
                    "unknown materialized view option \"{key}\" (valid: emit, allowed_lateness)"
                )));
            }
        }
    }
    if out.emit_on_update && out.allowed_lateness.is_some_and(|l| l > 0) {
        return Err(bad_option(
            "allowed_lateness applies to emit = 'on_window_close'; with emit = 'on_update' a \
             window's rows are updated until the watermark passes its end"
                .into(),
        ));
    }
    Ok(out)
}

fn bad_option(message: String) -> Error {
    Error::Plan {
        sqlstate: "22023",
        message,
    }
}
