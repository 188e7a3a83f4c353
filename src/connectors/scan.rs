//! [`SourceTable`]: a source in the catalog, and [`SourceScanExec`], the
//! DataFusion plan that reads it directly.
//!
//! `SELECT ... FROM source` runs as a DataFusion plan over an unbounded
//! input: filters, projections, LIMIT and other stateless operators stream
//! rows as they arrive; the statement ends at its LIMIT, at the end of a
//! finite source, or when the client cancels. Watermarks are not part of a
//! DataFusion plan and are dropped here; windowed work belongs to the
//! streaming operators.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::SourceRuntime;
use crate::stream::Message;

/// A source as DataFusion sees it.
#[derive(Debug, Clone)]
pub struct SourceTable {
    runtime: Arc<SourceRuntime>,
}

impl SourceTable {
    pub fn new(runtime: Arc<SourceRuntime>) -> Self {
        SourceTable { runtime }
    }

    pub fn runtime(&self) -> &Arc<SourceRuntime> {
        &self.runtime
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.runtime.spec.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(SourceScanExec::new(
            self.runtime.clone(),
            projection.cloned(),
        )?))
    }
}

/// Reads one source through a fresh reader, one partition.
#[derive(Debug)]
pub struct SourceScanExec {
    runtime: Arc<SourceRuntime>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SourceScanExec {
    fn new(runtime: Arc<SourceRuntime>, projection: Option<Vec<usize>>) -> DfResult<Self> {
        let full = runtime.spec.schema.clone();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let boundedness = if runtime.connector.is_finite() {
            Boundedness::Bounded
        } else {
            Boundedness::Unbounded {
                requires_infinite_memory: false,
            }
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            boundedness,
        ));
        Ok(SourceScanExec {
            runtime,
            projection,
            schema,
            properties,
        })
    }
}

impl DisplayAs for SourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SourceScanExec: source={}, connector={}",
            self.runtime.spec.name, self.runtime.spec.connector
        )
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "SourceScanExec has one partition, asked for {partition}"
            )));
        }
        let reader = self
            .runtime
            .open_reader()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let projection = self.projection.clone();
        let rows = reader.into_stream().filter_map(move |message| {
            let out = match message {
                Ok(Message::Data(batch)) => Some(match &projection {
                    Some(p) => batch.project(p).map_err(DataFusionError::from),
                    None => Ok(batch),
                }),
                Ok(Message::Watermark(_) | Message::Barrier(_)) => None,
                Err(e) => Some(Err(DataFusionError::External(Box::new(e)))),
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}
