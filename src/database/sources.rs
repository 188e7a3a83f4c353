//! CREATE SOURCE: from the parsed statement to a running source in the
//! catalog. The same path rebuilds sources from the catalog at startup
//! (without the reachability checks, so an outage then cannot stop the
//! database from opening).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;

use super::{Command, Output, Session};
use crate::catalog::{Definition, Entry};
use crate::connectors::{SourceRuntime, SourceSpec, SourceTable};
use crate::error::Result;
use crate::sql::{CreateSource, ObjectKind};

impl Session {
    pub(super) async fn create_source(
        &mut self,
        create: &CreateSource,
        sql: &str,
    ) -> Result<Output> {
        let catalog = self.database().catalog().clone();
        if let Some(skip) =
            self.name_is_free(&create.name, create.if_not_exists, "CREATE SOURCE")?
        {
            return Ok(skip);
        }
        let runtime = self.build_source(create, true).await?;
        catalog.create(Entry {
            def: Definition {
                id: catalog.allocate_id()?,
                name: create.name.clone(),
                kind: ObjectKind::Source,
                sql: sql.to_string(),
                depends_on: Vec::new(),
            },
            provider: Arc::new(SourceTable::new(runtime)),
        })?;
        Ok(Output::Command(Command::new("CREATE SOURCE")))
    }

    /// Types the columns, checks the options and starts the connector.
    pub(super) async fn build_source(
        &self,
        create: &CreateSource,
        creating: bool,
    ) -> Result<Arc<SourceRuntime>> {
        let declared = self.column_schema(create).await?;
        let state = self.ctx.state();
        let (spec, connector) = SourceSpec::try_new(create, declared, &state)?;
        SourceRuntime::try_new(spec, connector, creating).await
    }

    /// The declared columns typed exactly as CREATE TABLE would type them.
    async fn column_schema(&self, create: &CreateSource) -> Result<SchemaRef> {
        if create.columns.is_empty() {
            return Ok(Arc::new(Schema::empty()));
        }
        let columns: Vec<String> = create.columns.iter().map(|c| c.to_string()).collect();
        let sql = format!("CREATE TABLE source_columns ({})", columns.join(", "));
        let statement = SqlParser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)?
            .parse_statement()?;
        match self.plan(statement).await? {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
                Ok(Arc::new(c.input.schema().as_arrow().clone()))
            }
            _ => Err(crate::internal!("source columns did not plan as a table")),
        }
    }
}
