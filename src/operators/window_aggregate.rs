//! [`WindowAggregateOperator`]: GROUP BY over event-time windows, emitted
//! when the watermark passes a window's end.
//!
//! Each open window keeps DataFusion's own group-key table (`GroupValues`)
//! and one `GroupsAccumulator` per aggregate (vectorized where DataFusion
//! has one, its row accumulator behind an adapter otherwise), so every
//! built-in aggregate and every UDAF works. A window's state is freed the
//! moment it is emitted: memory grows with open windows and keys, never with
//! the number of events. Rows whose window has already been emitted are
//! late: dropped and counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::aggregate::{AggregateCall, CallInputs, conform, describe, micros};
use crate::error::Result;
use crate::stream::{EventTime, Operator, OperatorMetrics};

/// The state of one open window.
struct WindowState {
    groups: Box<dyn GroupValues>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

pub struct WindowAggregateOperator {
    /// Every GROUP BY expression, window columns included, in output order.
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Which of them is the window's end.
    window_end: usize,
    aggregates: Vec<AggregateCall>,
    group_schema: SchemaRef,
    schema: SchemaRef,
    /// Open windows by end (µs), so a watermark closes a prefix.
    windows: BTreeMap<EventTime, WindowState>,
    watermark: Option<EventTime>,
    late_rows: u64,
    /// Reused per batch to avoid reallocating group ids.
    group_ids: Vec<usize>,
}

impl WindowAggregateOperator {
    pub fn try_new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        window_end: usize,
        aggregates: Vec<AggregateCall>,
        input_schema: &Schema,
        schema: SchemaRef,
    ) -> Result<Self> {
        let group_fields = group_exprs
            .iter()
            .zip(schema.fields())
            .map(|(e, f)| {
                Ok(f.as_ref()
                    .clone()
                    .with_data_type(e.data_type(input_schema)?)
                    .with_nullable(true))
            })
            .collect::<Result<Vec<_>>>()?;
        let operator = WindowAggregateOperator {
            group_exprs,
            window_end,
            aggregates,
            group_schema: Arc::new(Schema::new(group_fields)),
            schema,
            windows: BTreeMap::new(),
            watermark: None,
            late_rows: 0,
            group_ids: Vec::new(),
        };
        // An aggregate DataFusion cannot run for these types fails here, at
        // CREATE, not later inside the running view.
        operator.new_window()?;
        Ok(operator)
    }

    fn new_window(&self) -> Result<WindowState> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| create_accumulator(&a.function))
            .collect::<Result<Vec<_>>>()?;
        Ok(WindowState {
            groups: new_group_values(self.group_schema.clone(), &GroupOrdering::None)?,
            accumulators,
        })
    }

    /// Adds the rows of `batch` selected by `rows` (all when `None`) to the
    /// window ending at `end`.
    fn accumulate(
        &mut self,
        end: EventTime,
        keys: &[ArrayRef],
        inputs: &[CallInputs],
        rows: Option<&UInt32Array>,
    ) -> Result<()> {
        if !self.windows.contains_key(&end) {
            let fresh = self.new_window()?;
            self.windows.insert(end, fresh);
        }
        let pick = |a: &ArrayRef| -> Result<ArrayRef> {
            Ok(match rows {
                Some(r) => take(a, r, None)?,
                None => a.clone(),
            })
        };
        let keys = keys.iter().map(pick).collect::<Result<Vec<_>>>()?;
        let state = self.windows.get_mut(&end).expect("window inserted above");
        self.group_ids.clear();
        state.groups.intern(&keys, &mut self.group_ids)?;
        let total = state.groups.len();
        for (acc, (values, mask)) in state.accumulators.iter_mut().zip(inputs) {
            let values = values.iter().map(pick).collect::<Result<Vec<_>>>()?;
            let mask = mask.as_ref().map(pick).transpose()?;
            acc.update_batch(
                &values,
                &self.group_ids,
                mask.as_ref().map(|m| m.as_boolean()),
                total,
            )?;
        }
        Ok(())
    }

    fn emit(&self, state: &mut WindowState) -> Result<RecordBatch> {
        let mut columns = state.groups.emit(EmitTo::All)?;
        for acc in &mut state.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        let rows = columns.first().map_or(0, |c| c.len());
        conform(&self.schema, columns, rows)
    }
}

fn create_accumulator(f: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if f.groups_accumulator_supported() {
        Ok(f.create_groups_accumulator()?)
    } else {
        let f = f.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            f.create_accumulator()
        })))
    }
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> String {
        describe(
            "WindowAggregate",
            &self.group_exprs,
            &self.aggregates,
            "emit on watermark",
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        let mut keys = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut inputs = self
            .aggregates
            .iter()
            .map(|a| a.inputs(&batch, None))
            .collect::<Result<Vec<_>>>()?;
        let ends = micros(&keys[self.window_end])?;
        let mut ends = ends.as_primitive::<TimestampMicrosecondType>().clone();

        // Rows of windows the watermark has already closed are late.
        if let Some(wm) = self.watermark {
            let on_time: BooleanArray = gt(&ends, &TimestampMicrosecondArray::new_scalar(wm))?;
            let kept = on_time.true_count();
            if kept < rows {
                self.late_rows += (rows - kept) as u64;
                if kept == 0 {
                    return Ok(());
                }
                keys = keys
                    .iter()
                    .map(|k| filter(k, &on_time))
                    .collect::<std::result::Result<_, _>>()?;
                for (values, mask) in &mut inputs {
                    *values = values
                        .iter()
                        .map(|v| filter(v, &on_time))
                        .collect::<std::result::Result<_, _>>()?;
                    if let Some(m) = mask {
                        *m = filter(m, &on_time)?;
                    }
                }
                ends = filter(&ends, &on_time)?
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone();
            }
        }
        if datafusion::arrow::array::Array::null_count(&ends) > 0 {
            return Err(crate::internal!(
                "a window end is NULL (event time missing)"
            ));
        }
        let values = ends.values();
        let (first, all_same) = match values.first() {
            Some(f) => (*f, values.iter().all(|v| v == f)),
            None => return Ok(()),
        };
        if all_same {
            return self.accumulate(first, &keys, &inputs, None);
        }
        // Several windows in one batch (disorder, or a batch spanning a
        // boundary): split by window end.
        let mut by_window: BTreeMap<EventTime, Vec<u32>> = BTreeMap::new();
        for (i, e) in values.iter().enumerate() {
            by_window.entry(*e).or_default().push(i as u32);
        }
        for (end, idx) in by_window {
            let idx = UInt32Array::from(idx);
            self.accumulate(end, &keys, &inputs, Some(&idx))?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        let open = self.windows.split_off(&watermark.saturating_add(1));
        let closed = std::mem::replace(&mut self.windows, open);
        for (_, mut state) in closed {
            let batch = self.emit(&mut state)?;
            if batch.num_rows() > 0 {
                out.push(batch);
            }
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        let mut m = OperatorMetrics {
            late_rows: self.late_rows,
            ..Default::default()
        };
        for w in self.windows.values() {
            m.state_rows += w.groups.len() as u64;
            m.state_bytes += w.groups.size() as u64
                + w.accumulators.iter().map(|a| a.size() as u64).sum::<u64>();
        }
        m
    }
}
