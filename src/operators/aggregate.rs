//! What the aggregating operators (window, updating, session) share: an
//! aggregate call and how its arguments are read from a batch, and the
//! column helpers every stateful operator needs (event time in µs, output
//! columns cast to the plan's schema).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, filter, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::Result;

/// One aggregate call: the function, its FILTER clause.
#[derive(Clone)]
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// An aggregate's argument columns and its FILTER mask, for one batch.
pub(super) type CallInputs = (Vec<ArrayRef>, Option<ArrayRef>);

impl AggregateCall {
    /// Evaluates the arguments and the FILTER mask over `batch`, reordered
    /// by `order` when given (one `take` per column).
    pub(super) fn inputs(
        &self,
        batch: &RecordBatch,
        order: Option<&UInt32Array>,
    ) -> Result<CallInputs> {
        let rows = batch.num_rows();
        let column = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            let a = e.evaluate(batch)?.into_array(rows)?;
            Ok(match order {
                Some(o) => take(&a, o, None)?,
                None => a,
            })
        };
        let values = self
            .function
            .expressions()
            .iter()
            .map(column)
            .collect::<Result<Vec<_>>>()?;
        let mask = self.filter.as_ref().map(column).transpose()?;
        Ok((values, mask))
    }
}

/// Feeds rows `offset..offset + len` of `inputs` (those the FILTER keeps)
/// to a row accumulator, as additions or, with `retract`, removals.
pub(super) fn accumulate_run(
    accumulator: &mut dyn Accumulator,
    inputs: &CallInputs,
    offset: usize,
    len: usize,
    retract: bool,
) -> Result<()> {
    let (values, mask) = inputs;
    let mut slice: Vec<ArrayRef> = values.iter().map(|v| v.slice(offset, len)).collect();
    if let Some(m) = mask {
        let m = m.slice(offset, len);
        slice = slice
            .iter()
            .map(|c| filter(c, m.as_boolean()))
            .collect::<std::result::Result<_, _>>()?;
    }
    if retract {
        accumulator.retract_batch(&slice)?;
    } else {
        accumulator.update_batch(&slice)?;
    }
    Ok(())
}

/// `Kind: group by [..], aggregates [..], <how it emits>` for EXPLAIN.
pub(super) fn describe(
    kind: &str,
    group_exprs: &[Arc<dyn PhysicalExpr>],
    aggregates: &[AggregateCall],
    emits: &str,
) -> String {
    let groups: Vec<String> = group_exprs.iter().map(|e| e.to_string()).collect();
    let aggs: Vec<&str> = aggregates.iter().map(|a| a.function.name()).collect();
    format!(
        "{kind}: group by [{}], aggregates [{}], {emits}",
        groups.join(", "),
        aggs.join(", ")
    )
}

/// A timestamp column in microseconds, the unit of every watermark.
pub(super) fn micros(column: &ArrayRef) -> Result<ArrayRef> {
    let unit = DataType::Timestamp(TimeUnit::Microsecond, None);
    Ok(if column.data_type() == &unit {
        column.clone()
    } else {
        cast(column, &unit)?
    })
}

/// Builds `schema`'s batch of `rows` rows from `columns`, casting a column
/// whose type the operator's own tables widened (group-key tables, row
/// format, joins making columns nullable) to what the plan promised.
pub(super) fn conform(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}
