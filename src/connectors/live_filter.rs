//! [`LiveFilterExec`]: DataFusion's filter without its output batching, for
//! queries over a live source.
//!
//! `FilterExec` gathers the rows that pass into batches of `batch_size`
//! (8192) rows before handing them on, and hands on a partial batch only at
//! the end of its input. Over a source that never ends, a selective filter
//! would hold matching rows back until thousands more had matched, perhaps
//! forever. This plan filters each input batch and hands on what passed at
//! once; [`unbatched_filters`] puts it in place of every FilterExec of an
//! unbounded query. It keeps FilterExec's predicate, projection and limit.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, batch_filter};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// `plan` with every FilterExec replaced by a [`LiveFilterExec`] when the
/// plan never ends; unchanged otherwise.
pub fn unbatched_filters(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    if !plan.properties().boundedness.is_unbounded() {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        Ok(match node.downcast_ref::<FilterExec>() {
            Some(filter) => Transformed::yes(Arc::new(LiveFilterExec {
                filter: filter.clone(),
            }) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// A FilterExec that passes each batch's matching rows on as they come.
#[derive(Debug)]
pub struct LiveFilterExec {
    /// The filter replaced; only its settings are used.
    filter: FilterExec,
}

impl DisplayAs for LiveFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LiveFilterExec: {}", self.filter.predicate())
    }
}

impl ExecutionPlan for LiveFilterExec {
    fn name(&self) -> &str {
        "LiveFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.filter.properties()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.filter.apply_expressions(f)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.filter.children()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let replaced = Arc::new(self.filter.clone()).replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        let filter = replaced
            .downcast_ref::<FilterExec>()
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Internal("FilterExec changed kind with new children".into())
            })?;
        Ok(Arc::new(LiveFilterExec { filter }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.filter.input().execute(partition, context)?;
        let predicate = self.filter.predicate().clone();
        let projection = self.filter.projection().clone();
        let filter = move |batch: DfResult<RecordBatch>| -> DfResult<RecordBatch> {
            let passed = batch_filter(&batch?, &predicate)?;
            Ok(match &projection {
                Some(p) => passed.project(p)?,
                None => passed,
            })
        };
        // Rows still wanted under a LIMIT pushed into the filter.
        let left = self.filter.fetch();
        let rows = futures::stream::unfold(
            (input, filter, left),
            |(mut input, filter, left)| async move {
                if left == Some(0) {
                    return None;
                }
                loop {
                    let batch = match filter(input.next().await?) {
                        Ok(b) if b.num_rows() == 0 => continue,
                        Ok(b) => b,
                        Err(e) => return Some((Err(e), (input, filter, Some(0)))),
                    };
                    let (batch, left) = match left {
                        Some(n) if batch.num_rows() >= n => (batch.slice(0, n), Some(0)),
                        Some(n) => (batch.clone(), Some(n - batch.num_rows())),
                        None => (batch, None),
                    };
                    return Some((Ok(batch), (input, filter, left)));
                }
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.filter.schema(),
            rows,
        )))
    }
}
