//! CREATE SINK: resolve what it writes (a materialized view's feed, or a
//! query planned like a materialized view into a private dataflow), check
//! the options, prepare the directory and start the sink; and CREATE
//! EXTERNAL TABLE, the way to read files (a sink's archive) back with SQL.
//! The same paths rebuild both from the catalog at startup (a sink then
//! skips the directory check, so a missing disk cannot stop the database
//! from opening: its commits fail visibly instead).

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::{CreateExternalTable, Statement as DfStatement};

use super::{Command, Output, Session, relation_name, statement_relations};
use crate::catalog::{Definition, Entry};
use crate::connectors::sinks::{SinkRuntime, SinkSpec, SinkTable, updating_refused};
use crate::error::{CatalogErrorKind, Error, Result};
use crate::operators::{ViewContents, ViewTable};
use crate::sql::{CreateSink, ObjectKind, SinkInput, Statement};
use crate::stream::Dataflow;

impl Session {
    pub(super) async fn create_sink(&mut self, create: &CreateSink, sql: &str) -> Result<Output> {
        let catalog = self.database().catalog().clone();
        if let Some(skip) = self.name_is_free(&create.name, create.if_not_exists, "CREATE SINK")? {
            return Ok(skip);
        }
        let id = catalog.allocate_id()?;
        let created = async {
            let (runtime, depends_on) = self.build_sink(create, id, true).await?;
            catalog.create(Entry {
                def: Definition {
                    id,
                    name: create.name.clone(),
                    kind: ObjectKind::Sink,
                    sql: sql.to_string(),
                    depends_on,
                },
                provider: Arc::new(SinkTable::new(runtime.clone())),
            })?;
            Ok::<_, Error>(runtime)
        }
        .await;
        // A sink that was not created takes no part in checkpoints.
        let runtime = created.inspect_err(|_| self.database().forget_checkpoints_of(id))?;
        self.database().register_sink(&create.name, runtime);
        Ok(Output::Command(Command::new("CREATE SINK")))
    }

    /// Starts the sink with catalog id `id`; returns it and the relations
    /// it reads. `creating` checks that the path can be written.
    pub(super) async fn build_sink(
        &self,
        create: &CreateSink,
        id: u64,
        creating: bool,
    ) -> Result<(Arc<SinkRuntime>, Vec<String>)> {
        let catalog = self.database().catalog().clone();
        let view = match &create.input {
            SinkInput::Relation(name) => catalog.get(name).and_then(|e| {
                let provider: &dyn TableProvider = e.provider.as_ref();
                (provider as &dyn std::any::Any)
                    .downcast_ref::<ViewTable>()
                    .map(|v| (name.clone(), v.contents().clone()))
            }),
            SinkInput::Query(_) => None,
        };
        let (input, contents, plan, depends_on) = match (&create.input, view) {
            (_, Some((name, contents))) => {
                if contents.is_updating() {
                    return Err(updating_refused(&format!("materialized view \"{name}\"")));
                }
                (name.clone(), contents, None, vec![name.clone()])
            }
            (SinkInput::Relation(name), None) => {
                if catalog.get(name).is_none() {
                    return Err(Error::catalog(
                        CatalogErrorKind::UndefinedTable,
                        format!("relation \"{name}\" does not exist"),
                    ));
                }
                let query = format!("SELECT * FROM \"{}\"", name.replace('"', "\"\""));
                let (contents, plan) = self.sink_query(&query).await?;
                (name.clone(), contents, Some(plan), vec![name.clone()])
            }
            (SinkInput::Query(query), None) => {
                let (contents, plan) = self.sink_query(query).await?;
                let depends_on = match self.database().parser().parse_single(query)? {
                    Some(p) => match p.statement {
                        Statement::Query(s) => statement_relations(&s)
                            .into_iter()
                            .filter(|n| catalog.get(n).is_some())
                            .collect(),
                        _ => Vec::new(),
                    },
                    None => Vec::new(),
                };
                ("query".to_string(), contents, Some(plan), depends_on)
            }
        };
        let schema = contents.schema().clone();
        let state = self.ctx.state();
        let data_dir = &self.database().config().data_dir;
        let spec = SinkSpec::try_new(
            &create.name,
            &input,
            &create.options,
            &schema,
            &state,
            data_dir,
        )?;
        if creating {
            if let Some(other) = self
                .database()
                .sink_handles()
                .into_iter()
                .find(|s| s.spec.path == spec.path)
            {
                return Err(crate::connectors::invalid(format!(
                    "sink \"{}\" already writes to {}; give each sink its own path",
                    other.spec.name,
                    spec.path.display()
                )));
            }
            spec.prepare_path()?;
        }
        let run = next_run(&catalog.storage_dir(id))?;
        let db = self.database();
        // Attached before the private dataflow starts, so no row is missed.
        let attachment = contents.attach()?;
        let dataflow = match plan {
            Some(plan) => {
                let parallelism = db.config().target_partitions;
                let link = db.checkpoint_link(crate::state::dataflow_owner(id));
                Some(Dataflow::spawn(plan, contents, parallelism, link)?)
            }
            None => None,
        };
        let runtime = SinkRuntime::start(
            spec,
            schema,
            id,
            run,
            attachment,
            dataflow,
            db.checkpoint_link(crate::state::sink_owner(id)),
            db.checkpoint_completed(),
        );
        Ok((runtime, depends_on))
    }

    /// Plans `query` for streaming into contents that keep no rows.
    async fn sink_query(
        &self,
        query: &str,
    ) -> Result<(Arc<ViewContents>, crate::planner::StreamPlan)> {
        let statement = match self.database().parser().parse_single(query)? {
            Some(p) => match p.statement {
                Statement::Query(s) => *s,
                _ => {
                    return Err(Error::syntax(
                        "CREATE SINK ... AS takes a query (SELECT ...)",
                    ));
                }
            },
            None => return Err(Error::syntax("CREATE SINK ... AS needs a query")),
        };
        let logical = self.plan(statement).await?;
        let state = self.ctx.state();
        let plan = crate::planner::plan(&state.optimize(&logical)?, &state, Default::default())?;
        if plan.updating {
            return Err(updating_refused("this query"));
        }
        let contents = Arc::new(ViewContents::new_passing(plan.schema.clone()));
        Ok((contents, plan))
    }

    pub(super) async fn create_external_table(
        &mut self,
        create: &CreateExternalTable,
        sql: &str,
    ) -> Result<Output> {
        let catalog = self.database().catalog().clone();
        let name = crate::sql::object_name(&create.name)?;
        if let Some(skip) =
            self.name_is_free(&name, create.if_not_exists, "CREATE EXTERNAL TABLE")?
        {
            return Ok(skip);
        }
        let provider = self.build_external_table(create).await?;
        catalog.create(Entry {
            def: Definition {
                id: catalog.allocate_id()?,
                name,
                kind: ObjectKind::Table,
                sql: sql.to_string(),
                depends_on: Vec::new(),
            },
            provider,
        })?;
        Ok(Output::Command(Command::new("CREATE EXTERNAL TABLE")))
    }

    /// DataFusion's listing table for the statement (schema and Hive
    /// partitions inferred from the files).
    pub(super) async fn build_external_table(
        &self,
        create: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        if create.temporary || create.or_replace || create.unbounded {
            return Err(Error::Unsupported(
                "CREATE EXTERNAL TABLE takes no TEMPORARY, OR REPLACE or UNBOUNDED in runnel"
                    .into(),
            ));
        }
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::CreateExternalTable(create.clone()))
            .await?;
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = plan else {
            return Err(crate::internal!(
                "CREATE EXTERNAL TABLE did not plan as one"
            ));
        };
        relation_name(&cmd.name)?;
        let factory = state
            .table_factories()
            .get(cmd.file_type.as_str())
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "external tables STORED AS {} (use PARQUET, CSV, JSON or ARROW)",
                    cmd.file_type
                ))
            })?;
        Ok(factory.create(&state, &cmd).await?)
    }
}

/// Numbers this start of a sink: the count kept in its storage folder,
/// plus one (file names then never repeat across restarts).
fn next_run(dir: &std::path::Path) -> Result<u64> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("runs");
    let run = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    crate::catalog::write_atomically(&path, run.to_string().as_bytes())?;
    Ok(run)
}
