//! [`SessionWindowOperator`]: GROUP BY SESSION(ts, gap), keys — per key,
//! rows less than `gap` apart form one session `[first ts, last ts + gap)`,
//! emitted once when the watermark passes its end.
//!
//! Each row arrives with its own proto-session `[ts, ts + gap)` (the
//! `window_start` and `window_end` columns the SESSION rewrite adds); the
//! operator merges overlapping ones per key. Rows of a batch are sorted by
//! (key, start) once; consecutive overlapping rows form a run that updates
//! one session's DataFusion row accumulators with a slice, so the per-row
//! work is a comparison. A row that bridges two sessions merges them
//! (accumulator states merged with `merge_batch`). A session's state is
//! freed when it is emitted; a row whose own proto-session has already
//! closed is late (dropped and counted). Closed sessions are emitted in
//! (key, start) order, so a run and its replay from a checkpoint agree.
//!
//! A checkpoint is two batches: the scalars (watermark, late rows, next
//! close), then one row per open session: its key columns (`key_<i>`),
//! `start`, `end` and each accumulator's `state()` as `state_<a>_<f>`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::aggregate::checkpoint::{self, RowStates};
use super::aggregate::{AggregateCall, accumulate_run, conform, describe, micros};
use crate::error::Result;
use crate::stream::{EventTime, Operator, OperatorMetrics};

struct Session {
    start: EventTime,
    end: EventTime,
    accumulators: Vec<Box<dyn Accumulator>>,
}

pub struct SessionWindowOperator {
    /// Every GROUP BY expression in output order, window columns included.
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    window_start: usize,
    window_end: usize,
    aggregates: Vec<AggregateCall>,
    converter: RowConverter,
    /// Open sessions per key, sorted by start and disjoint.
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    /// No open session ends before this (a lower bound).
    next_close: EventTime,
    watermark: Option<EventTime>,
    late_rows: u64,
    schema: SchemaRef,
}

impl SessionWindowOperator {
    pub fn try_new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        window_start: usize,
        window_end: usize,
        aggregates: Vec<AggregateCall>,
        input_schema: &Schema,
        schema: SchemaRef,
    ) -> Result<Self> {
        let fields = group_exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != window_start && *i != window_end)
            .map(|(_, e)| Ok(SortField::new(e.data_type(input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        // Without keys every row shares one constant key.
        let fields = if fields.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            fields
        };
        for a in &aggregates {
            // Fails at CREATE for an aggregate DataFusion cannot build.
            a.function.create_accumulator()?;
        }
        Ok(SessionWindowOperator {
            group_exprs,
            window_start,
            window_end,
            aggregates,
            converter: RowConverter::new(fields)?,
            sessions: HashMap::new(),
            next_close: EventTime::MAX,
            watermark: None,
            late_rows: 0,
            schema,
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        Ok(self
            .aggregates
            .iter()
            .map(|a| a.function.create_accumulator())
            .collect::<datafusion::error::Result<Vec<_>>>()?)
    }

    /// Folds `from` into `into`.
    fn merge(into: &mut Session, mut from: Session) -> Result<()> {
        into.start = into.start.min(from.start);
        into.end = into.end.max(from.end);
        for (a, b) in into
            .accumulators
            .iter_mut()
            .zip(from.accumulators.iter_mut())
        {
            let state = b
                .state()?
                .into_iter()
                .map(|s| s.to_array_of_size(1))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            a.merge_batch(&state)?;
        }
        Ok(())
    }

    fn emit(&mut self, watermark: EventTime) -> Result<Option<RecordBatch>> {
        let mut closed = Vec::new();
        let mut next_close = EventTime::MAX;
        let mut emptied = Vec::new();
        for (key, sessions) in self.sessions.iter_mut() {
            let mut kept = Vec::with_capacity(sessions.len());
            for s in sessions.drain(..) {
                if s.end <= watermark {
                    closed.push((key.clone(), s));
                } else {
                    next_close = next_close.min(s.end);
                    kept.push(s);
                }
            }
            if kept.is_empty() {
                emptied.push(key.clone());
            }
            *sessions = kept;
        }
        for k in emptied {
            self.sessions.remove(&k);
        }
        self.next_close = next_close;
        if closed.is_empty() {
            return Ok(None);
        }
        // The map's order differs between runs; the output's must not.
        closed.sort_unstable_by(|(a, s), (b, t)| a.cmp(b).then(s.start.cmp(&t.start)));
        let mut keys = Vec::with_capacity(closed.len());
        let mut starts = Vec::with_capacity(closed.len());
        let mut ends = Vec::with_capacity(closed.len());
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        for (key, mut s) in closed {
            keys.push(key);
            starts.push(s.start);
            ends.push(s.end);
            for (column, a) in values.iter_mut().zip(s.accumulators.iter_mut()) {
                column.push(a.evaluate()?);
            }
        }
        let parser = self.converter.parser();
        let mut key_columns = self
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?
            .into_iter();
        let starts: ArrayRef = Arc::new(datafusion::arrow::array::TimestampMicrosecondArray::from(
            starts,
        ));
        let ends: ArrayRef = Arc::new(datafusion::arrow::array::TimestampMicrosecondArray::from(
            ends,
        ));
        let mut columns = Vec::new();
        for i in 0..self.group_exprs.len() {
            columns.push(if i == self.window_start {
                starts.clone()
            } else if i == self.window_end {
                ends.clone()
            } else {
                key_columns
                    .next()
                    .ok_or_else(|| crate::internal!("a session key column is missing"))?
            });
        }
        for v in values {
            columns.push(ScalarValue::iter_to_array(v)?);
        }
        Ok(Some(conform(&self.schema, columns, keys.len())?))
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> String {
        describe(
            "SessionWindow",
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
        let groups = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let starts = micros(&groups[self.window_start])?;
        let ends = micros(&groups[self.window_end])?;
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        let ends = ends.as_primitive::<TimestampMicrosecondType>();
        let keys: Vec<ArrayRef> = groups
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.window_start && *i != self.window_end)
            .map(|(_, a)| a.clone())
            .collect();
        let keys = if keys.is_empty() {
            vec![Arc::new(datafusion::arrow::array::Int8Array::from(vec![0i8; rows])) as ArrayRef]
        } else {
            keys
        };
        let key_rows = self.converter.convert_columns(&keys)?;
        let mut order: Vec<u32> = Vec::with_capacity(rows);
        for row in 0..rows {
            if starts.is_null(row) || ends.is_null(row) {
                return Err(crate::internal!("a session row without event time"));
            }
            if self.watermark.is_some_and(|wm| ends.value(row) <= wm) {
                self.late_rows += 1;
                continue;
            }
            order.push(row as u32);
        }
        order.sort_unstable_by(|a, b| {
            key_rows
                .row(*a as usize)
                .cmp(&key_rows.row(*b as usize))
                .then(starts.value(*a as usize).cmp(&starts.value(*b as usize)))
        });
        let indices = UInt32Array::from_iter_values(order.iter().copied());
        let inputs = self
            .aggregates
            .iter()
            .map(|a| a.inputs(&batch, Some(&indices)))
            .collect::<Result<Vec<_>>>()?;
        // Runs of one key whose proto-sessions overlap.
        let mut i = 0;
        while i < order.len() {
            let row = order[i] as usize;
            let key = key_rows.row(row);
            let (start, mut end) = (starts.value(row), ends.value(row));
            let mut j = i + 1;
            while j < order.len() {
                let next = order[j] as usize;
                if key_rows.row(next) != key || starts.value(next) >= end {
                    break;
                }
                end = end.max(ends.value(next));
                j += 1;
            }
            let mut run = Session {
                start,
                end,
                accumulators: self.new_accumulators()?,
            };
            for (acc, inputs) in run.accumulators.iter_mut().zip(&inputs) {
                accumulate_run(acc.as_mut(), inputs, i, j - i, false)?;
            }
            // Merge the run with every open session of the key it overlaps.
            let sessions = self.sessions.entry(key.as_ref().into()).or_default();
            let mut kept = Vec::with_capacity(sessions.len() + 1);
            for s in sessions.drain(..) {
                if s.start < run.end && run.start < s.end {
                    let mut s = s;
                    let absorbed = std::mem::replace(
                        &mut run,
                        Session {
                            start: 0,
                            end: 0,
                            accumulators: Vec::new(),
                        },
                    );
                    Self::merge(&mut s, absorbed)?;
                    run = s;
                } else {
                    kept.push(s);
                }
            }
            self.next_close = self.next_close.min(run.end);
            kept.push(run);
            kept.sort_unstable_by_key(|s| s.start);
            *sessions = kept;
            i = j;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        if watermark < self.next_close {
            return Ok(());
        }
        if let Some(b) = self.emit(watermark)? {
            out.push(b);
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        let mut m = OperatorMetrics {
            late_rows: self.late_rows,
            ..Default::default()
        };
        for (k, sessions) in &self.sessions {
            m.state_rows += sessions.len() as u64;
            m.state_bytes += sessions
                .iter()
                .map(|s| {
                    (k.len() + 32 + s.accumulators.iter().map(|a| a.size()).sum::<usize>()) as u64
                })
                .sum::<u64>();
        }
        m
    }
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let scalars = checkpoint::scalars(&[
            ("watermark", self.watermark),
            ("late_rows", Some(self.late_rows as i64)),
            ("next_close", Some(self.next_close)),
        ])?;
        let states = row_states(&self.aggregates)?.take(
            self.sessions
                .values_mut()
                .flatten()
                .map(|s| &mut s.accumulators),
        )?;
        // The map is not modified in between, so it iterates in the same order.
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for (key, sessions) in &self.sessions {
            for s in sessions {
                keys.push(key);
                starts.push(s.start);
                ends.push(s.end);
            }
        }
        let rows = keys.len();
        let parser = self.converter.parser();
        let keys = self
            .converter
            .convert_rows(keys.into_iter().map(|k| parser.parse(k)))?;
        let mut columns: Vec<(String, ArrayRef)> = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (format!("key_{i}"), k))
            .collect();
        columns.push(("start".into(), Arc::new(Int64Array::from(starts))));
        columns.push(("end".into(), Arc::new(Int64Array::from(ends))));
        columns.extend(states);
        Ok(vec![scalars, checkpoint::batch(columns, rows)?])
    }

    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        let [scalars, sessions] = checkpoint::expect(state, "session window")?;
        self.watermark = checkpoint::scalar(&scalars, "watermark")?;
        self.late_rows = checkpoint::scalar(&scalars, "late_rows")?.unwrap_or(0) as u64;
        self.next_close = checkpoint::scalar(&scalars, "next_close")?.unwrap_or(EventTime::MAX);
        // The converter's fields: the non-window keys, or one constant.
        let key_count = self.group_exprs.len().saturating_sub(2).max(1);
        let key_columns = (0..key_count)
            .map(|i| checkpoint::column(&sessions, &format!("key_{i}")).cloned())
            .collect::<Result<Vec<_>>>()?;
        let keys = self.converter.convert_columns(&key_columns)?;
        let starts = checkpoint::int64s(&sessions, "start")?;
        let ends = checkpoint::int64s(&sessions, "end")?;
        let row_states = row_states(&self.aggregates)?;
        let states = row_states.columns(&sessions)?;
        self.sessions.clear();
        // Rows of a key come in start order: pushing keeps them sorted.
        for row in 0..sessions.num_rows() {
            let session = Session {
                start: starts.value(row),
                end: ends.value(row),
                accumulators: row_states.load(&states, row)?,
            };
            self.sessions
                .entry(keys.row(row).as_ref().into())
                .or_default()
                .push(session);
        }
        Ok(())
    }
}

/// How checkpoints read and rebuild the sessions' accumulators.
fn row_states(aggregates: &[AggregateCall]) -> Result<RowStates<'_>> {
    RowStates::try_new(aggregates.len(), move |i| {
        Ok(aggregates[i].function.create_accumulator()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::aggregate::testing::{S, assert_recovers, call, column, time};
    use crate::stream::Message;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::min_max::max_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;

    const GAP: i64 = 10;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("window_start", time(), false),
            Field::new("window_end", time(), false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    /// Rows `(k, ts in s, v)`, each with its proto-session `[ts, ts + gap)`.
    fn rows(rows: &[(&str, i64, i64)]) -> Message {
        let k = StringArray::from_iter_values(rows.iter().map(|r| r.0));
        let start = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1 * S));
        let end = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| (r.1 + GAP) * S));
        let v = datafusion::arrow::array::Int64Array::from_iter_values(rows.iter().map(|r| r.2));
        let columns: Vec<ArrayRef> = vec![Arc::new(k), Arc::new(start), Arc::new(end), Arc::new(v)];
        Message::Data(RecordBatch::try_new(input(), columns).unwrap())
    }

    /// `k, session start, session end, count(v), sum(v), max(v),
    /// count(DISTINCT v)`.
    fn operator() -> Box<dyn Operator> {
        let input = input();
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("window_start", time(), true),
            Field::new("window_end", time(), true),
            Field::new("n", DataType::Int64, true),
            Field::new("total", DataType::Int64, true),
            Field::new("top", DataType::Int64, true),
            Field::new("kinds", DataType::Int64, true),
        ]));
        let aggregates = vec![
            call(count_udaf(), column("v", &input), &input, "n", false),
            call(sum_udaf(), column("v", &input), &input, "total", false),
            call(max_udaf(), column("v", &input), &input, "top", false),
            call(count_udaf(), column("v", &input), &input, "kinds", true),
        ];
        let groups = vec![
            column("k", &input),
            column("window_start", &input),
            column("window_end", &input),
        ];
        Box::new(SessionWindowOperator::try_new(groups, 1, 2, aggregates, &input, output).unwrap())
    }

    #[test]
    fn sessions_resume_and_merge_across_a_checkpoint() {
        let messages = vec![
            rows(&[("a", 0, 1), ("a", 5, 2), ("b", 1, 3)]),
            Message::Watermark(3 * S),
            rows(&[("a", 30, 4), ("b", 8, 3), ("c", 2, 5)]),
            rows(&[("a", 22, 1)]),
            Message::Watermark(12 * S),
            // a 14 bridges [0, 15) and [22, 40).
            rows(&[("c", 1, 6), ("b", 15, 7), ("a", 14, 8)]),
            Message::Watermark(30 * S),
            rows(&[("a", 39, 9), ("b", 40, 1), ("a", 1, 2)]),
            Message::Watermark(100 * S),
        ];
        let (out, metrics) = assert_recovers(&operator, &messages);
        assert_eq!(metrics.late_rows, 2);
        let expected = "\
+---+---------------------+---------------------+---+-------+-----+-------+
| k | window_start        | window_end          | n | total | top | kinds |
+---+---------------------+---------------------+---+-------+-----+-------+
| c | 1970-01-01T00:00:02 | 1970-01-01T00:00:12 | 1 | 5     | 5   | 1     |
| b | 1970-01-01T00:00:01 | 1970-01-01T00:00:25 | 3 | 13    | 7   | 2     |
| a | 1970-01-01T00:00:00 | 1970-01-01T00:00:49 | 6 | 25    | 9   | 5     |
| b | 1970-01-01T00:00:40 | 1970-01-01T00:00:50 | 1 | 1     | 1   | 1     |
+---+---------------------+---------------------+---+-------+-----+-------+";
        assert_eq!(out, expected);
    }
}
