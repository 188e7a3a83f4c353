//! Stateless operators: a filter and a projection, both running DataFusion
//! physical expressions over whole batches (vectorized; no per-row work).

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::stream::Operator;

/// Keeps the rows for which the predicate is true (NULL counts as false).
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl FilterOperator {
    pub fn new(predicate: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Self {
        FilterOperator { predicate, schema }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> String {
        format!("Filter: {}", self.predicate)
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let filtered = filter_record_batch(&batch, mask.as_boolean())?;
        if filtered.num_rows() > 0 {
            out.push(filtered);
        }
        Ok(())
    }
}

/// Computes the output columns from the input columns.
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectionOperator { exprs, schema }
    }
}

impl Operator for ProjectionOperator {
    fn name(&self) -> String {
        let exprs: Vec<String> = self.exprs.iter().map(|e| e.to_string()).collect();
        format!("Projection: {}", exprs.join(", "))
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        out.push(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

    #[test]
    fn filter_then_project() {
        let input = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let a: Arc<dyn PhysicalExpr> = Arc::new(Column::new("a", 0));
        let gt: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            a.clone(),
            Op::Gt,
            Arc::new(Literal::new(ScalarValue::Int32(Some(1)))),
        ));
        let mut f = FilterOperator::new(gt, input.clone());
        let batch = RecordBatch::try_new(
            input.clone(),
            vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut out = Vec::new();
        f.process(batch, &mut out).unwrap();
        assert_eq!(out[0].num_rows(), 2);
        let times: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
                a,
                DataType::Int64,
                None,
            )),
            Op::Multiply,
            Arc::new(Literal::new(ScalarValue::Int64(Some(10)))),
        ));
        let out_schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, false)]));
        let mut p = ProjectionOperator::new(vec![times], out_schema);
        let mut projected = Vec::new();
        p.process(out.remove(0), &mut projected).unwrap();
        let b = projected[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(b.values().to_vec(), vec![20, 30]);
    }
}
