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
//!
//! A checkpoint is two batches: the scalars (watermark, late rows), then
//! every open window's groups, one row each: `window_end`, the group keys
//! (`key_<i>`) and each accumulator's intermediate state (`state_<a>_<f>`),
//! as `GroupValues::emit` and `GroupsAccumulator::state` give them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp::gt;
use datafusion::arrow::compute::{concat, filter, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::aggregate::checkpoint;
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

    /// How many state columns each aggregate writes to a checkpoint.
    fn state_widths(&self) -> Result<Vec<usize>> {
        self.aggregates
            .iter()
            .map(|a| Ok(a.function.state_fields()?.len()))
            .collect()
    }

    /// A window holding the groups of `columns` (keys, then every
    /// accumulator's state as `state_widths` splits it).
    fn load_window(&self, columns: &[ArrayRef], widths: &[usize]) -> Result<WindowState> {
        let mut window = self.new_window()?;
        let keys = self.group_exprs.len();
        let mut ids = Vec::new();
        window.groups.intern(&columns[..keys], &mut ids)?;
        let total = window.groups.len();
        let mut at = keys;
        for (acc, width) in window.accumulators.iter_mut().zip(widths) {
            acc.merge_batch(&columns[at..at + width], &ids, total)?;
            at += width;
        }
        Ok(window)
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

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let scalars = checkpoint::scalars(&[
            ("watermark", self.watermark),
            ("late_rows", Some(self.late_rows as i64)),
        ])?;
        let widths = self.state_widths()?;
        let width = self.group_exprs.len() + widths.iter().sum::<usize>();
        let mut ends: Vec<EventTime> = Vec::new();
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); width];
        // Emitting keys and state drains a window: each is rebuilt from
        // what it gave, exactly as `restore` rebuilds it.
        let open: Vec<EventTime> = self.windows.keys().copied().collect();
        for end in open {
            let Some(mut window) = self.windows.remove(&end) else {
                continue;
            };
            let mut columns = window.groups.emit(EmitTo::All)?;
            for acc in &mut window.accumulators {
                columns.extend(acc.state(EmitTo::All)?);
            }
            if columns.len() != width {
                return Err(crate::internal!(
                    "a window's checkpoint has {} columns, its layout {width}",
                    columns.len()
                ));
            }
            let rows = columns[0].len();
            self.windows
                .insert(end, self.load_window(&columns, &widths)?);
            ends.extend(std::iter::repeat_n(end, rows));
            for (part, c) in parts.iter_mut().zip(columns) {
                part.push(c);
            }
        }
        if ends.is_empty() {
            return Ok(vec![scalars]);
        }
        let rows = ends.len();
        let mut columns = vec![("window_end".to_string(), checkpoint::int64(ends))];
        let names = (0..self.group_exprs.len())
            .map(|k| format!("key_{k}"))
            .chain(
                widths
                    .iter()
                    .enumerate()
                    .flat_map(|(a, w)| (0..*w).map(move |f| format!("state_{a}_{f}"))),
            );
        for (name, part) in names.zip(parts) {
            let part: Vec<&dyn datafusion::arrow::array::Array> =
                part.iter().map(|c| c.as_ref()).collect();
            columns.push((name, concat(&part)?));
        }
        Ok(vec![scalars, checkpoint::batch(columns, rows)?])
    }

    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        let mut state = state.into_iter();
        let scalars = state
            .next()
            .ok_or_else(|| crate::internal!("a window aggregate checkpoint without scalars"))?;
        self.watermark = checkpoint::scalar(&scalars, "watermark")?;
        self.late_rows = checkpoint::scalar(&scalars, "late_rows")?.unwrap_or(0) as u64;
        let Some(groups) = state.next() else {
            return Ok(());
        };
        if state.next().is_some() {
            return Err(crate::internal!(
                "a window aggregate checkpoint has more than two batches"
            ));
        }
        let widths = self.state_widths()?;
        let width = self.group_exprs.len() + widths.iter().sum::<usize>();
        if groups.num_columns() != width + 1 {
            return Err(crate::internal!(
                "a window aggregate checkpoint has {} columns, the plan {}",
                groups.num_columns(),
                width + 1
            ));
        }
        self.windows.clear();
        let ends = checkpoint::int64s(&groups, "window_end")?.values().clone();
        // Rows come window by window: one run per window end.
        let mut start = 0;
        for i in 1..=ends.len() {
            if i < ends.len() && ends[i] == ends[start] {
                continue;
            }
            let columns: Vec<ArrayRef> = groups.columns()[1..]
                .iter()
                .map(|c| c.slice(start, i - start))
                .collect();
            let window = self.load_window(&columns, &widths)?;
            self.windows.insert(ends[start], window);
            start = i;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::aggregate::testing::{
        S, assert_recovers, call, column, count_sum_avg, keyed_input, keyed_rows,
    };
    use crate::stream::Message;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::functions_aggregate::count::count_udaf;

    /// Rows `(k, window end in s, v)`.
    fn rows(rows: &[(&str, i64, i64)]) -> Message {
        keyed_rows(
            &rows
                .iter()
                .map(|(k, e, v)| (*k, *e, *v, 1))
                .collect::<Vec<_>>(),
        )
    }

    /// `k, window_end, count(v), sum(v), avg(v), count(DISTINCT v)`: the
    /// distinct count runs as a row accumulator behind DataFusion's adapter.
    fn operator() -> Box<dyn Operator> {
        let input = keyed_input();
        let (mut aggregates, values) = count_sum_avg(&input);
        aggregates.push(call(
            count_udaf(),
            column("v", &input),
            &input,
            "kinds",
            true,
        ));
        let keys = ["k", "window_end"].map(|k| input.field_with_name(k).unwrap().clone());
        let fields = (keys.into_iter().map(|f| f.with_nullable(true)))
            .chain(values)
            .chain([Field::new("kinds", DataType::Int64, true)]);
        let output = Arc::new(Schema::new(fields.collect::<Vec<_>>()));
        let groups = vec![column("k", &input), column("window_end", &input)];
        let op = WindowAggregateOperator::try_new(groups, 1, aggregates, &input, output);
        Box::new(op.unwrap())
    }

    #[test]
    fn checkpoint_in_any_place_resumes_the_same_windows() {
        let messages = vec![
            rows(&[("a", 10, 1), ("b", 10, 2), ("a", 20, 3)]),
            Message::Watermark(5 * S),
            rows(&[("a", 10, 1), ("c", 20, 5), ("a", 30, 7)]),
            Message::Watermark(10 * S),
            rows(&[("a", 10, 9), ("b", 20, 2), ("b", 30, 2)]),
            rows(&[("a", 20, 4), ("a", 10, 1), ("a", 20, 5)]),
            Message::Watermark(25 * S),
            rows(&[("c", 30, 3), ("c", 20, 1)]),
            Message::Watermark(40 * S),
        ];
        let (out, metrics) = assert_recovers(&operator, &messages);
        assert_eq!(metrics.late_rows, 3);
        let expected = "\
+---+---------------------+---+-------+------+-------+
| k | window_end          | n | total | mean | kinds |
+---+---------------------+---+-------+------+-------+
| a | 1970-01-01T00:00:10 | 2 | 2     | 1.0  | 1     |
| b | 1970-01-01T00:00:10 | 1 | 2     | 2.0  | 1     |
| a | 1970-01-01T00:00:20 | 3 | 12    | 4.0  | 3     |
| c | 1970-01-01T00:00:20 | 1 | 5     | 5.0  | 1     |
| b | 1970-01-01T00:00:20 | 1 | 2     | 2.0  | 1     |
| a | 1970-01-01T00:00:30 | 1 | 7     | 7.0  | 1     |
| b | 1970-01-01T00:00:30 | 1 | 2     | 2.0  | 1     |
| c | 1970-01-01T00:00:30 | 1 | 3     | 3.0  | 1     |
+---+---------------------+---+-------+------+-------+";
        assert_eq!(out, expected);
    }
}
