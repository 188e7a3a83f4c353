//! CREATE MATERIALIZED VIEW: plan the query, start its dataflow, register
//! its contents; and FLUSH, which waits for every view to catch up.
//!
//! A view's dataflow is owned by the database (one per view, by name) and
//! stopped when the view is dropped. Without checkpoints yet, a restart
//! rebuilds each view by reading its source again from the connector's
//! start position.

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
        if let Some(existing) = catalog.get(&name) {
            if create.if_not_exists {
                return Ok(Output::Command(
                    Command::new("CREATE MATERIALIZED VIEW")
                        .with_notice(format!("relation \"{name}\" already exists, skipping")),
                ));
            }
            return Err(Error::catalog(
                CatalogErrorKind::DuplicateTable,
                format!(
                    "relation \"{name}\" already exists (as a {})",
                    existing.def.kind
                ),
            ));
        }
        let (contents, dataflow) = self.build_materialized_view(statement).await?;
        let depends_on = statement_relations(statement)
            .into_iter()
            .filter(|n| catalog.get(n).is_some())
            .collect();
        catalog.create(Entry {
            def: Definition {
                id: catalog.allocate_id()?,
                name: name.clone(),
                kind: ObjectKind::MaterializedView,
                sql: sql.to_string(),
                depends_on,
            },
            provider: Arc::new(ViewTable::new(contents)),
        })?;
        self.database().register_dataflow(&name, dataflow);
        Ok(Output::Command(Command::new("CREATE MATERIALIZED VIEW")))
    }

    /// Plans the view's query into a dataflow and starts it.
    pub(super) async fn build_materialized_view(
        &self,
        statement: &ast::Statement,
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
        if !matches!(create.options, ast::CreateTableOptions::None) {
            return Err(Error::Unsupported(format!(
                "materialized view options {} are not supported yet",
                create.options
            )));
        }
        let logical = self
            .plan(ast::Statement::Query(create.query.clone()))
            .await?;
        let state = self.ctx.state();
        let optimized = state.optimize(&logical)?;
        let plan = crate::planner::plan(&optimized, &state)?;
        let parallelism = self.database().config().target_partitions;
        let contents = Arc::new(ViewContents::new(plan.schema.clone()));
        if let Ok(mut g) = contents.graph.lock() {
            *g = plan.describe(parallelism);
        }
        let dataflow = Dataflow::spawn(plan, contents.clone(), parallelism)?;
        Ok((contents, dataflow))
    }

    /// The operator graph of a view, one line per row (PostgreSQL's
    /// EXPLAIN column name).
    pub(super) async fn explain_materialized_view(
        &self,
        target: &crate::sql::ExplainTarget,
    ) -> Result<Output> {
        let lines = match target {
            crate::sql::ExplainTarget::Existing(name) => {
                let entry = self.database().catalog().get(name).ok_or_else(|| {
                    Error::catalog(
                        CatalogErrorKind::UndefinedTable,
                        format!("materialized view \"{name}\" does not exist"),
                    )
                })?;
                let provider: &dyn datafusion::catalog::TableProvider = entry.provider.as_ref();
                let view = (provider as &dyn std::any::Any)
                    .downcast_ref::<ViewTable>()
                    .ok_or_else(|| Error::Plan {
                        sqlstate: "42809",
                        message: format!(
                            "\"{name}\" is a {}, not a materialized view",
                            entry.def.kind
                        ),
                    })?;
                view.contents()
                    .graph
                    .lock()
                    .map(|g| g.clone())
                    .unwrap_or_default()
            }
            crate::sql::ExplainTarget::Create(statement) => {
                let ast::Statement::CreateView(create) = statement.as_ref() else {
                    return Err(crate::internal!("not a CREATE MATERIALIZED VIEW"));
                };
                let logical = self
                    .plan(ast::Statement::Query(create.query.clone()))
                    .await?;
                let state = self.ctx.state();
                let plan = crate::planner::plan(&state.optimize(&logical)?, &state)?;
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
    /// available when it was issued.
    pub(super) async fn flush(&self) -> Result<Output> {
        let db = self.database();
        let ticket = db.shared.flush_ticket.fetch_add(1, Ordering::SeqCst) + 1;
        let flows = db.dataflow_handles();
        for flow in flows {
            flow.flush(ticket).await?;
        }
        Ok(Output::Command(Command::new("FLUSH")))
    }
}
