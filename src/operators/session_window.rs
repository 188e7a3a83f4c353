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
//! closed is late (dropped and counted).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

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
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        let mut next_close = EventTime::MAX;
        let mut emptied = Vec::new();
        for (key, sessions) in self.sessions.iter_mut() {
            let mut kept = Vec::with_capacity(sessions.len());
            for mut s in sessions.drain(..) {
                if s.end <= watermark {
                    keys.push(key.clone());
                    starts.push(s.start);
                    ends.push(s.end);
                    for (column, a) in values.iter_mut().zip(s.accumulators.iter_mut()) {
                        column.push(a.evaluate()?);
                    }
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
        if keys.is_empty() {
            return Ok(None);
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
}
