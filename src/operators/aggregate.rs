//! What the aggregating operators (window, updating, session) share: an
//! aggregate call and how its arguments are read from a batch, and the
//! column helpers every stateful operator needs (event time in µs, output
//! columns cast to the plan's schema), and how their checkpoints are laid
//! out as Arrow columns ([`checkpoint`]).

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

/// How the aggregating operators lay out a checkpoint: their scalars
/// (watermark, counters) in a one-row batch, their groups as named columns,
/// and row accumulators' state as one row per group.
pub(super) mod checkpoint {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
    use datafusion::logical_expr::Accumulator;
    use datafusion::scalar::ScalarValue;

    use crate::error::Result;

    /// A batch of named columns, all nullable: the layout is the
    /// operator's own, not a plan's.
    pub fn batch(columns: Vec<(String, ArrayRef)>, rows: usize) -> Result<RecordBatch> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
            .collect();
        let columns = columns.into_iter().map(|(_, c)| c).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }

    /// An operator's scalars as a one-row batch of Int64 columns.
    pub fn scalars(values: &[(&str, Option<i64>)]) -> Result<RecordBatch> {
        let columns = values
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    Arc::new(Int64Array::from(vec![*v])) as ArrayRef,
                )
            })
            .collect();
        batch(columns, 1)
    }

    /// The scalar `name` of a batch [`scalars`] built.
    pub fn scalar(batch: &RecordBatch, name: &str) -> Result<Option<i64>> {
        let c = int64s(batch, name)?;
        if c.len() != 1 {
            return Err(crate::internal!(
                "checkpoint scalars in {} rows, not one",
                c.len()
            ));
        }
        Ok(c.is_valid(0).then(|| c.value(0)))
    }

    pub fn int64(values: impl IntoIterator<Item = i64>) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(values))
    }

    /// The columns `<prefix>_0 .. <prefix>_<n-1>` of a checkpoint batch.
    pub fn numbered(batch: &RecordBatch, prefix: &str, n: usize) -> Result<Vec<ArrayRef>> {
        (0..n)
            .map(|i| column(batch, &format!("{prefix}_{i}")).cloned())
            .collect()
    }

    pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| crate::internal!("a checkpoint batch has no column {name}"))
    }

    pub fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
        column(batch, name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| crate::internal!("checkpoint column {name} is not Int64"))
    }

    /// The `N` batches an operator's snapshot writes, or an error naming it.
    pub fn expect<const N: usize>(state: Vec<RecordBatch>, what: &str) -> Result<[RecordBatch; N]> {
        state.try_into().map_err(|s: Vec<RecordBatch>| {
            crate::internal!("a {what} checkpoint has {} batches, not {N}", s.len())
        })
    }

    /// Row accumulators' state as columns, one row per group: every
    /// aggregate's state fields side by side, named `state_<aggregate>_<field>`.
    pub struct RowStates<'a> {
        /// Builds aggregate `i`'s empty accumulator the way the operator does.
        fresh: Box<dyn Fn(usize) -> Result<Box<dyn Accumulator>> + 'a>,
        /// Per aggregate, its state fields as empty columns (the types a
        /// fresh accumulator reports, for a checkpoint without groups).
        empty: Vec<Vec<ArrayRef>>,
    }

    impl<'a> RowStates<'a> {
        pub fn try_new(
            aggregates: usize,
            fresh: impl Fn(usize) -> Result<Box<dyn Accumulator>> + 'a,
        ) -> Result<Self> {
            let empty = (0..aggregates)
                .map(|i| {
                    fresh(i)?
                        .state()?
                        .iter()
                        .map(|s| Ok(s.to_array_of_size(0)?))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RowStates {
                fresh: Box::new(fresh),
                empty,
            })
        }

        /// Takes the state of every group's accumulators. `state()` may
        /// consume an accumulator, so each group gets fresh ones that merged
        /// the state back: the operator goes on as a restored one would.
        pub fn take<'g>(
            &self,
            groups: impl Iterator<Item = &'g mut Vec<Box<dyn Accumulator>>>,
        ) -> Result<Vec<(String, ArrayRef)>> {
            let mut groups: Vec<_> = groups.collect();
            let mut values: Vec<Vec<Vec<ScalarValue>>> = self
                .empty
                .iter()
                .map(|fields| vec![Vec::with_capacity(groups.len()); fields.len()])
                .collect();
            for accumulators in &mut groups {
                for (acc, fields) in accumulators.iter_mut().zip(values.iter_mut()) {
                    let state = acc.state()?;
                    if state.len() != fields.len() {
                        return Err(crate::internal!(
                            "an accumulator's state has {} fields, a fresh one's {}",
                            state.len(),
                            fields.len()
                        ));
                    }
                    for (column, v) in fields.iter_mut().zip(state) {
                        column.push(v);
                    }
                }
            }
            let mut columns = Vec::new();
            for (fields, empty) in values.into_iter().zip(&self.empty) {
                for (v, e) in fields.into_iter().zip(empty) {
                    columns.push(if v.is_empty() {
                        e.clone()
                    } else {
                        ScalarValue::iter_to_array(v)?
                    });
                }
            }
            for (row, accumulators) in groups.into_iter().enumerate() {
                *accumulators = self.load(&columns, row)?;
            }
            Ok(self.names().into_iter().zip(columns).collect())
        }

        /// The state columns of a batch that holds what [`RowStates::take`]
        /// returned.
        pub fn columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
            self.names()
                .iter()
                .map(|n| column(batch, n).cloned())
                .collect()
        }

        /// Group `row`'s accumulators, rebuilt from its state.
        pub fn load(&self, columns: &[ArrayRef], row: usize) -> Result<Vec<Box<dyn Accumulator>>> {
            let mut at = 0;
            let mut accumulators = Vec::with_capacity(self.empty.len());
            for (i, fields) in self.empty.iter().enumerate() {
                let mut acc = (self.fresh)(i)?;
                let state: Vec<ArrayRef> = columns[at..at + fields.len()]
                    .iter()
                    .map(|c| c.slice(row, 1))
                    .collect();
                acc.merge_batch(&state)?;
                accumulators.push(acc);
                at += fields.len();
            }
            Ok(accumulators)
        }

        fn names(&self) -> Vec<String> {
            self.empty
                .iter()
                .enumerate()
                .flat_map(|(a, fields)| (0..fields.len()).map(move |f| format!("state_{a}_{f}")))
                .collect()
        }
    }
}

/// What the aggregating operators' tests share: building aggregate calls,
/// and the recovery check every streaming result must pass.
#[cfg(test)]
pub(super) mod testing {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
    use datafusion::arrow::ipc::reader::StreamReader;
    use datafusion::arrow::ipc::writer::StreamWriter;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{cast, col};

    use super::AggregateCall;
    use crate::stream::{Message, Operator, OperatorMetrics, changelog};

    /// One second in event time (µs).
    pub const S: i64 = 1_000_000;

    pub fn time() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    /// `k, window_end, v, __weight`; the weight is read only by operators
    /// over an updating input.
    pub fn keyed_input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("window_end", time(), false),
            Field::new("v", DataType::Int64, false),
            changelog::weight_field(),
        ]))
    }

    /// Rows `(k, window end in s, v, weight)` of [`keyed_input`].
    pub fn keyed_rows(rows: &[(&str, i64, i64, i64)]) -> Message {
        let k = StringArray::from_iter_values(rows.iter().map(|r| r.0));
        let end = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1 * S));
        let v = Int64Array::from_iter_values(rows.iter().map(|r| r.2));
        let w = Int64Array::from_iter_values(rows.iter().map(|r| r.3));
        let columns: Vec<ArrayRef> = vec![Arc::new(k), Arc::new(end), Arc::new(v), Arc::new(w)];
        Message::Data(RecordBatch::try_new(keyed_input(), columns).unwrap())
    }

    /// `count(v) AS n, sum(v) AS total, avg(v) AS mean` over `input`, and
    /// their output fields.
    pub fn count_sum_avg(input: &SchemaRef) -> (Vec<AggregateCall>, Vec<Field>) {
        let v = column("v", input);
        let calls = vec![
            call(count_udaf(), v.clone(), input, "n", false),
            call(sum_udaf(), v, input, "total", false),
            call(avg_udaf(), float("v", input), input, "mean", false),
        ];
        let fields = vec![
            Field::new("n", DataType::Int64, true),
            Field::new("total", DataType::Int64, true),
            Field::new("mean", DataType::Float64, true),
        ];
        (calls, fields)
    }

    /// `udaf(DISTINCT? arg)` over `schema`, named `name`.
    pub fn call(
        udaf: Arc<AggregateUDF>,
        arg: Arc<dyn PhysicalExpr>,
        schema: &SchemaRef,
        name: &str,
        distinct: bool,
    ) -> AggregateCall {
        let function = AggregateExprBuilder::new(udaf, vec![arg])
            .schema(schema.clone())
            .alias(name)
            .with_distinct(distinct)
            .build()
            .unwrap();
        AggregateCall {
            function: Arc::new(function),
            filter: None,
        }
    }

    pub fn column(name: &str, schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
        col(name, schema).unwrap()
    }

    /// Column `name` cast to Float64, as the planner coerces AVG's argument.
    pub fn float(name: &str, schema: &SchemaRef) -> Arc<dyn PhysicalExpr> {
        cast(column(name, schema), schema, DataType::Float64).unwrap()
    }

    fn run(op: &mut dyn Operator, messages: &[Message]) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        for m in messages {
            match m {
                Message::Data(b) => op.process(b.clone(), &mut out).unwrap(),
                Message::Watermark(wm) => op.on_watermark(*wm, &mut out).unwrap(),
                Message::Barrier(_) => {}
            }
        }
        out
    }

    fn show(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    /// Through Arrow IPC, one stream per batch, as a checkpoint is written.
    fn through_ipc(state: &[RecordBatch]) -> Vec<RecordBatch> {
        state
            .iter()
            .map(|b| {
                let mut bytes = Vec::new();
                let mut w = StreamWriter::try_new(&mut bytes, &b.schema()).unwrap();
                w.write(b).unwrap();
                w.finish().unwrap();
                drop(w);
                let mut r = StreamReader::try_new(bytes.as_slice(), None).unwrap();
                r.next().unwrap().unwrap()
            })
            .collect()
    }

    /// Runs `messages` straight, then for every cut point: snapshots an
    /// operator there, restores the state into a fresh one and feeds it
    /// the rest. The output before the cut plus the restored operator's
    /// after it, and the snapshotted operator's own continuation, must
    /// both equal the straight run. Returns the straight output, printed,
    /// and the straight operator's metrics at the end.
    pub fn assert_recovers(
        build: &dyn Fn() -> Box<dyn Operator>,
        messages: &[Message],
    ) -> (String, OperatorMetrics) {
        let mut straight_op = build();
        let straight = run(straight_op.as_mut(), messages);
        let expected = show(&straight);
        for cut in 0..=messages.len() {
            let (head, tail) = messages.split_at(cut);
            let mut original = build();
            let before = run(original.as_mut(), head);
            let state = original.snapshot().unwrap();
            let each = |state: &[RecordBatch]| -> Vec<String> {
                state
                    .iter()
                    .map(|b| show(std::slice::from_ref(b)))
                    .collect()
            };
            assert_eq!(
                each(&state),
                each(&original.snapshot().unwrap()),
                "a second snapshot at {cut} differs"
            );
            let mut restored = build();
            restored.restore(through_ipc(&state)).unwrap();
            let after = run(restored.as_mut(), tail);
            let continued = run(original.as_mut(), tail);
            let resumed = [before.clone(), after].concat();
            assert_eq!(show(&resumed), expected, "restored at {cut}");
            let kept = [before, continued].concat();
            assert_eq!(show(&kept), expected, "snapshotted at {cut}");
            for op in [&restored, &original] {
                let (m, s) = (op.metrics(), straight_op.metrics());
                assert_eq!((m.late_rows, m.state_rows), (s.late_rows, s.state_rows));
            }
        }
        (expected, straight_op.metrics())
    }
}
