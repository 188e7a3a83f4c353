//! CREATE TABLE (with columns or AS SELECT), CREATE VIEW and DROP of any
//! kind: the catalog changes a session makes for tables and views. Sources
//! (`sources.rs`) and materialized views (`views.rs`) have their own files.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::ast;

use super::{Command, Output, Session, relation_name, statement_relations, view_provider};
use crate::catalog::{Definition, Entry};
use crate::error::{CatalogErrorKind, Error, Result};
use crate::sql::ObjectKind;
use crate::storage::{StoredTable, TableHandle};

impl Session {
    /// Checks that `name` is free for a CREATE `tag`: `Ok(None)` when it
    /// is, `Ok(Some(..))` (a notice, nothing created) for IF NOT EXISTS,
    /// 42P07 otherwise.
    pub(super) fn name_is_free(
        &self,
        name: &str,
        if_not_exists: bool,
        tag: &str,
    ) -> Result<Option<Output>> {
        let Some(existing) = self.db.catalog().get(name) else {
            return Ok(None);
        };
        if if_not_exists {
            return Ok(Some(Output::Command(Command::new(tag).with_notice(
                format!("relation \"{name}\" already exists, skipping"),
            ))));
        }
        Err(Error::catalog(
            CatalogErrorKind::DuplicateTable,
            format!(
                "relation \"{name}\" already exists (as a {})",
                existing.def.kind
            ),
        ))
    }

    pub(super) async fn create_table(
        &mut self,
        statement: &ast::Statement,
        sql: &str,
    ) -> Result<Output> {
        let plan = self.plan(statement.clone()).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
            return Err(crate::unsupported!(
                "this form of CREATE TABLE is not supported"
            ));
        };
        if create.temporary {
            return Err(crate::unsupported!("temporary tables are not supported"));
        }
        if create.or_replace {
            return Err(crate::unsupported!(
                "CREATE OR REPLACE TABLE is not supported"
            ));
        }
        let name = relation_name(&create.name)?;
        let catalog = self.db.catalog();
        if let Some(existing) = catalog.get(&name) {
            if create.if_not_exists {
                return Ok(Output::Command(Command::new("CREATE TABLE").with_notice(
                    format!("relation \"{name}\" already exists, skipping"),
                )));
            }
            return Err(Error::catalog(
                CatalogErrorKind::DuplicateTable,
                format!(
                    "relation \"{name}\" already exists (as a {})",
                    existing.def.kind
                ),
            ));
        }
        let schema: SchemaRef = Arc::new(create.input.schema().as_arrow().clone());
        let id = catalog.allocate_id()?;
        let dir = catalog.storage_dir(id);
        let result = async {
            let table = Arc::new(StoredTable::create(
                &dir,
                schema,
                create.column_defaults.iter().cloned().collect(),
            )?);
            let is_ctas = !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_));
            let mut rows = 0;
            if is_ctas {
                let batches = self
                    .run_query(create.input.as_ref().clone())
                    .await?
                    .collect()
                    .await?;
                rows = table.append(batches).await?;
            }
            catalog.create(Entry {
                def: Definition {
                    id,
                    name: name.clone(),
                    kind: ObjectKind::Table,
                    sql: sql.to_string(),
                    depends_on: Vec::new(),
                },
                provider: Arc::new(TableHandle(table)),
            })?;
            Ok::<_, Error>(if is_ctas {
                format!("SELECT {rows}")
            } else {
                "CREATE TABLE".to_string()
            })
        }
        .await;
        match result {
            Ok(tag) => Ok(Output::Command(Command::new(tag))),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    pub(super) async fn create_view(
        &mut self,
        statement: &ast::Statement,
        sql: &str,
    ) -> Result<Output> {
        let plan = self.plan(statement.clone()).await?;
        let (name, or_replace) = match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateView(v)) => {
                (relation_name(&v.name)?, v.or_replace)
            }
            _ => return Err(crate::internal!("CREATE VIEW did not plan as a view")),
        };
        if or_replace {
            return Err(crate::unsupported!(
                "CREATE OR REPLACE VIEW is not supported; drop the view first"
            ));
        }
        let provider = view_provider(plan)?;
        let catalog = self.db.catalog();
        // From the statement, not the plan: DataFusion inlines views it
        // reads, so the plan only names the base tables underneath.
        let depends_on = statement_relations(statement)
            .into_iter()
            .filter(|name| catalog.get(name).is_some())
            .collect();
        catalog.create(Entry {
            def: Definition {
                id: catalog.allocate_id()?,
                name,
                kind: ObjectKind::View,
                sql: sql.to_string(),
                depends_on,
            },
            provider,
        })?;
        Ok(Output::Command(Command::new("CREATE VIEW")))
    }

    pub(super) async fn drop_objects(
        &mut self,
        drop: &crate::sql::DropStatement,
    ) -> Result<Output> {
        let catalog = self.db.catalog().clone();
        let mut command = Command::new(format!("DROP {}", drop.kind.tag()));
        // Like PostgreSQL, a missing name fails the whole statement before
        // anything is dropped.
        if !drop.if_exists
            && let Some(missing) = drop.names.iter().find(|n| catalog.get(n).is_none())
        {
            return Err(Error::catalog(
                match drop.kind {
                    ObjectKind::Source | ObjectKind::Sink => CatalogErrorKind::UndefinedObject,
                    _ => CatalogErrorKind::UndefinedTable,
                },
                format!("{} \"{missing}\" does not exist", drop.kind.noun()),
            ));
        }
        for name in &drop.names {
            if catalog.get(name).is_none() && drop.if_exists {
                command = command.with_notice(format!(
                    "{} \"{name}\" does not exist, skipping",
                    drop.kind.noun()
                ));
                continue;
            }
            let removed = catalog.drop_object(name, drop.kind, drop.cascade)?;
            for def in removed {
                self.db.forget_dataflow(&def.name, def.id);
                let dir = catalog.storage_dir(def.id);
                if dir.exists()
                    && let Err(e) = std::fs::remove_dir_all(&dir)
                {
                    // The catalog no longer names it; startup removes it.
                    tracing::warn!(folder = %dir.display(), error = %e, "could not remove storage of a dropped object");
                }
            }
        }
        Ok(Output::Command(command))
    }
}
