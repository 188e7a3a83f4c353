//! `CatalogSchema`: the DataFusion view of the `public` schema, answering
//! name lookups from the [`Catalog`]. Objects are created and dropped through
//! `Database`, never through DataFusion's register/deregister calls.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};

use super::Catalog;
use crate::sql::ObjectKind;

#[derive(Debug)]
pub struct CatalogSchema(pub Arc<Catalog>);

#[async_trait]
impl SchemaProvider for CatalogSchema {
    fn table_names(&self) -> Vec<String> {
        self.0.names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.0.get(name).map(|e| e.provider))
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        Ok(self.0.get(name).map(|e| match e.def.kind {
            ObjectKind::View => TableType::View,
            _ => TableType::Base,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.get(name).is_some()
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Internal(format!(
            "objects are created through the runnel catalog, not registered directly ({name})"
        )))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Internal(format!(
            "objects are dropped through the runnel catalog, not deregistered directly ({name})"
        )))
    }
}
