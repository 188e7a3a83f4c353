//! [`IntervalJoinOperator`]: two streams joined on equal keys with a time
//! bound between their event times (`r.ts BETWEEN l.ts - a AND l.ts + b`),
//! emitting each match as soon as both rows are there (append-only).
//!
//! Each side keeps its rows in arrival batches with a hash index (Arrow row
//! format) from key to (batch sequence, row). A new batch of one side
//! probes the other side's index, gathers the partners with `interleave`,
//! and the join's full condition (time bound included) filters the pairs.
//! In one combined batch the left rows go first and are then visible to
//! the right rows, so a pair is found exactly once. A row is kept only
//! while a future row of the other side could still match it: a left row
//! until the watermark passes `l.ts + hi`, a right row until it passes
//! `r.ts - lo` (where `lo <= r.ts - l.ts <= hi`). Input uses the window
//! join's combined layout (docs/design/0006).
//!
//! Checkpoints write each side's rows as one batch plus the boundaries and
//! newest times of its arrival batches, so a restored operator expires rows
//! batch by batch exactly as the original would (which decides what a row
//! behind the watermark can still meet); the indexes are rebuilt.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, UInt8Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{
    concat_batches, filter_record_batch, interleave, max as max_kernel,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType, UInt8Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{checkpoint, conform, micros};
use super::join::{count, key_converter, take_all};
use crate::error::Result;
use crate::stream::{EventTime, Operator, OperatorMetrics};

/// Where the interval join finds what in its combined input.
#[derive(Debug, Clone, Copy)]
pub struct IntervalLayout {
    /// Join key columns start at 1 (after `__side`).
    pub keys: usize,
    pub left_width: usize,
    pub right_width: usize,
    /// The event-time column within each side's columns.
    pub left_time: usize,
    pub right_time: usize,
    /// `lo <= r.ts - l.ts <= hi`, in µs.
    pub lo: i64,
    pub hi: i64,
}

/// Probe rows and, for each, a partner as (batch position, row).
type Matches = (Vec<u32>, Vec<(usize, usize)>);

/// A side's rows as one batch, and each arrival batch's length and newest
/// time: what a checkpoint keeps of a [`SideStore`].
type SideState = (RecordBatch, Vec<u64>, Vec<EventTime>);

/// One side's rows (keys, then the side's columns) and their index.
#[derive(Default)]
struct SideStore {
    batches: VecDeque<(RecordBatch, EventTime)>,
    /// Sequence number of `batches[0]`.
    front: u64,
    index: HashMap<Box<[u8]>, Vec<(u64, u32)>>,
    /// Index entries pointing at dropped batches.
    stale: usize,
    rows: usize,
}

impl SideStore {
    fn insert(
        &mut self,
        converter: &RowConverter,
        keys: usize,
        batch: RecordBatch,
        max_time: EventTime,
    ) -> Result<()> {
        let seq = self.front + self.batches.len() as u64;
        let key_columns = &batch.columns()[..keys];
        let rows = converter.convert_columns(key_columns)?;
        for i in 0..batch.num_rows() {
            if key_columns.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let key = rows.row(i);
            match self.index.get_mut(key.as_ref()) {
                Some(v) => v.push((seq, i as u32)),
                None => {
                    self.index
                        .insert(key.as_ref().into(), vec![(seq, i as u32)]);
                }
            }
        }
        self.rows += batch.num_rows();
        self.batches.push_back((batch, max_time));
        Ok(())
    }

    /// Drops front batches whose newest row can no longer match.
    fn expire(&mut self, keep_after: EventTime) {
        while let Some((b, max_time)) = self.batches.front() {
            if *max_time >= keep_after {
                break;
            }
            self.stale += b.num_rows();
            self.rows -= b.num_rows();
            self.batches.pop_front();
            self.front += 1;
        }
        if self.stale > self.rows.max(1024) {
            let front = self.front;
            self.index.retain(|_, v| {
                v.retain(|(seq, _)| *seq >= front);
                !v.is_empty()
            });
            self.stale = 0;
        }
    }

    /// The side's state; `None` when empty.
    fn snapshot(&self) -> Result<Option<SideState>> {
        let Some((first, _)) = self.batches.front() else {
            return Ok(None);
        };
        let rows = concat_batches(&first.schema(), self.batches.iter().map(|(b, _)| b))?;
        let lengths = self.batches.iter().map(|(b, _)| b.num_rows() as u64);
        let times = self.batches.iter().map(|(_, t)| *t);
        Ok(Some((rows, lengths.collect(), times.collect())))
    }

    /// Reinserts what [`SideStore::snapshot`] wrote, batch by batch. Each
    /// batch is copied out of `rows` so that expiring it frees its memory.
    fn restore(
        &mut self,
        converter: &RowConverter,
        keys: usize,
        rows: &RecordBatch,
        batches: impl Iterator<Item = (u64, EventTime)>,
    ) -> Result<()> {
        let mut start = 0u64;
        for (len, max_time) in batches {
            let end = start + len;
            if end > rows.num_rows() as u64 {
                return Err(crate::internal!("checkpoint batches overrun their rows"));
            }
            let idx = UInt32Array::from_iter_values(start as u32..end as u32);
            let batch = RecordBatch::try_new(rows.schema(), take_all(rows.columns(), &idx)?)?;
            self.insert(converter, keys, batch, max_time)?;
            start = end;
        }
        if start != rows.num_rows() as u64 {
            return Err(crate::internal!("checkpoint rows outside their batches"));
        }
        Ok(())
    }

    /// For each probe row, its partners: (probe row, (batch position, row)).
    fn probe(&self, converter: &RowConverter, keys: &[ArrayRef]) -> Result<Matches> {
        let rows = converter.convert_columns(keys)?;
        let mut probe = Vec::new();
        let mut partners = Vec::new();
        for i in 0..rows.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            if let Some(entries) = self.index.get(rows.row(i).as_ref()) {
                for (seq, row) in entries {
                    if *seq >= self.front {
                        probe.push(i as u32);
                        partners.push(((seq - self.front) as usize, *row as usize));
                    }
                }
            }
        }
        Ok((probe, partners))
    }
}

pub struct IntervalJoinOperator {
    layout: IntervalLayout,
    /// The join's whole non-equality condition (the time bound included),
    /// over the joined row.
    filter: Arc<dyn PhysicalExpr>,
    converter: RowConverter,
    left: SideStore,
    right: SideStore,
    watermark: Option<EventTime>,
    late_rows: u64,
    schema: SchemaRef,
}

impl IntervalJoinOperator {
    pub fn try_new(
        layout: IntervalLayout,
        key_types: Vec<DataType>,
        filter: Arc<dyn PhysicalExpr>,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(IntervalJoinOperator {
            layout,
            filter,
            converter: key_converter(&key_types)?,
            left: SideStore::default(),
            right: SideStore::default(),
            watermark: None,
            late_rows: 0,
            schema,
        })
    }

    /// The rows of one side (keys, then its columns) without late ones,
    /// and their newest time.
    fn side_rows(
        &mut self,
        batch: &RecordBatch,
        left: bool,
    ) -> Result<Option<(RecordBatch, EventTime)>> {
        let side = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
        let mask = eq(side, &UInt8Array::new_scalar(if left { 0 } else { 1 }))?;
        let rows = filter_record_batch(batch, &mask)?;
        if rows.num_rows() == 0 {
            return Ok(None);
        }
        let l = self.layout;
        let start = 1 + l.keys;
        let (range, time) = if left {
            (start..start + l.left_width, start + l.left_time)
        } else {
            (
                start + l.left_width..start + l.left_width + l.right_width,
                start + l.left_width + l.right_time,
            )
        };
        let columns: Vec<usize> = (1..1 + l.keys).chain(range).collect();
        let times = micros(rows.column(time))?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        // A row whose partners may already be gone is late.
        let reach = if left { l.hi } else { -l.lo };
        let rows = match self.watermark {
            Some(wm) => {
                let keep: datafusion::arrow::array::BooleanArray = times
                    .iter()
                    .map(|t| Some(t.is_some_and(|t| t.saturating_add(reach) >= wm)))
                    .collect();
                let kept = keep.true_count();
                self.late_rows += (rows.num_rows() - kept) as u64;
                if kept == 0 {
                    return Ok(None);
                }
                filter_record_batch(&rows, &keep)?
            }
            None => rows,
        };
        let times = micros(rows.column(time))?;
        let newest =
            max_kernel(times.as_primitive::<TimestampMicrosecondType>()).unwrap_or(EventTime::MIN);
        Ok(Some((rows.project(&columns)?, newest)))
    }

    /// Joins `rows` of one side with the other side's stored rows.
    fn probe(&self, rows: &RecordBatch, left: bool) -> Result<Option<RecordBatch>> {
        let k = self.layout.keys;
        let other = if left { &self.right } else { &self.left };
        let (probe, partners) = other.probe(&self.converter, &rows.columns()[..k])?;
        if probe.is_empty() {
            return Ok(None);
        }
        let probe = UInt32Array::from(probe);
        let mine = take_all(&rows.columns()[k..], &probe)?;
        let width = other
            .batches
            .front()
            .map(|(b, _)| b.num_columns())
            .unwrap_or(0);
        let theirs = (k..width)
            .map(|c| {
                let arrays: Vec<&dyn Array> = other
                    .batches
                    .iter()
                    .map(|(b, _)| b.column(c).as_ref())
                    .collect();
                Ok(interleave(&arrays, &partners)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let columns = if left {
            [mine, theirs].concat()
        } else {
            [theirs, mine].concat()
        };
        let joined = conform(&self.schema, columns, probe.len())?;
        let mask = self
            .filter
            .evaluate(&joined)?
            .into_array(joined.num_rows())?;
        let kept = filter_record_batch(&joined, mask.as_boolean())?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }
}

impl Operator for IntervalJoinOperator {
    fn name(&self) -> String {
        format!(
            "IntervalJoin: inner on {} keys, {} ms <= right time - left time <= {} ms, emit on match",
            self.layout.keys,
            self.layout.lo / 1000,
            self.layout.hi / 1000
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let k = self.layout.keys;
        for left in [true, false] {
            let Some((rows, newest)) = self.side_rows(&batch, left)? else {
                continue;
            };
            if let Some(joined) = self.probe(&rows, left)? {
                out.push(joined);
            }
            let store = if left {
                &mut self.left
            } else {
                &mut self.right
            };
            store.insert(&self.converter, k, rows, newest)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, _out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        // Future rows have time >= watermark: a left row l can still meet a
        // future r only if l + hi >= watermark, a right row r a future l
        // only if r - lo >= watermark.
        self.left.expire(watermark.saturating_sub(self.layout.hi));
        self.right.expire(watermark.saturating_add(self.layout.lo));
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        let mut m = OperatorMetrics {
            late_rows: self.late_rows,
            ..Default::default()
        };
        for store in [&self.left, &self.right] {
            m.state_rows += store.rows as u64;
            m.state_bytes += store
                .batches
                .iter()
                .map(|(b, _)| b.get_array_memory_size() as u64)
                .sum::<u64>();
        }
        m
    }

    /// `[scalars, batches, left rows?, right rows?]`: the scalars
    /// (`watermark`, `late_rows`); one row per stored arrival batch in
    /// order (`side` 0 left / 1 right, `rows`, `max_time`); then each side's
    /// rows (keys, then the side's columns) concatenated, present when the
    /// side has any.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let meta = checkpoint::scalars(&[
            ("watermark", self.watermark),
            ("late_rows", Some(self.late_rows as i64)),
        ])?;
        let (mut sides, mut lengths, mut times, mut rows) = (vec![], vec![], vec![], vec![]);
        for (side, store) in [(0u8, &self.left), (1u8, &self.right)] {
            if let Some((r, l, t)) = store.snapshot()? {
                sides.extend(std::iter::repeat_n(side, l.len()));
                lengths.extend(l);
                times.extend(t);
                rows.push(r);
            }
        }
        let batches = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("side", DataType::UInt8, false),
                Field::new("rows", DataType::UInt64, false),
                Field::new("max_time", DataType::Int64, false),
            ])),
            vec![
                Arc::new(UInt8Array::from(sides)),
                Arc::new(UInt64Array::from(lengths)),
                Arc::new(Int64Array::from(times)),
            ],
        )?;
        Ok([vec![meta, batches], rows].concat())
    }

    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        if self.left.rows + self.right.rows > 0 || self.watermark.is_some() {
            return Err(crate::internal!("{} restored after it ran", self.name()));
        }
        let mut state = state.into_iter();
        let Some(meta) = state.next() else {
            return Ok(());
        };
        let batches = state
            .next()
            .filter(|b| b.num_columns() == 3)
            .ok_or_else(|| crate::internal!("checkpoint state lacks the join's batches"))?;
        let (Some(sides), Some(lengths), Some(times)) = (
            batches.column(0).as_primitive_opt::<UInt8Type>(),
            batches.column(1).as_primitive_opt::<UInt64Type>(),
            batches.column(2).as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(crate::internal!("checkpoint batches of the wrong types"));
        };
        let k = self.layout.keys;
        for (side, width) in [
            (0u8, self.layout.left_width),
            (1u8, self.layout.right_width),
        ] {
            let mine = (0..batches.num_rows())
                .filter(|&i| sides.value(i) == side)
                .map(|i| (lengths.value(i), times.value(i)));
            if mine.clone().next().is_none() {
                continue;
            }
            let rows = state
                .next()
                .filter(|b| b.num_columns() == k + width)
                .ok_or_else(|| crate::internal!("checkpoint state lacks side {side}'s rows"))?;
            let store = if side == 0 {
                &mut self.left
            } else {
                &mut self.right
            };
            store.restore(&self.converter, k, &rows, mine)?;
        }
        if state.next().is_some() {
            return Err(crate::internal!("checkpoint state has extra batches"));
        }
        self.watermark = checkpoint::scalar(&meta, "watermark")?;
        self.late_rows = count(&meta, "late_rows")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};

    use super::super::aggregate::testing::assert_recovers;
    use super::super::join::tests::feed;
    use super::*;
    use crate::stream::Message;

    const LO: i64 = -5_000;
    const HI: i64 = 10_000;

    fn ts() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    /// `[__side, __k0 id, l_id, l_ts, l_v, r_id, r_ts, r_v]`.
    fn combined() -> SchemaRef {
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        Arc::new(Schema::new(vec![
            Field::new("__side", DataType::UInt8, false),
            int("__k0"),
            int("l_id"),
            Field::new("l_ts", ts(), true),
            int("l_v"),
            int("r_id"),
            Field::new("r_ts", ts(), true),
            int("r_v"),
        ]))
    }

    /// `LO <= r_ts - l_ts <= HI` over the joined row.
    fn operator() -> IntervalJoinOperator {
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![
            int("l_id"),
            Field::new("l_ts", ts(), true),
            int("l_v"),
            int("r_id"),
            Field::new("r_ts", ts(), true),
            int("r_v"),
        ]));
        let micros = |name: &str, i: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(CastExpr::new(
                Arc::new(Column::new(name, i)),
                DataType::Int64,
                None,
            ))
        };
        let gap: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            micros("r_ts", 4),
            Op::Minus,
            micros("l_ts", 1),
        ));
        let bound = |op: Op, v: i64| -> Arc<dyn PhysicalExpr> {
            Arc::new(BinaryExpr::new(
                gap.clone(),
                op,
                Arc::new(Literal::new(ScalarValue::Int64(Some(v)))),
            ))
        };
        let filter = Arc::new(BinaryExpr::new(
            bound(Op::GtEq, LO),
            Op::And,
            bound(Op::LtEq, HI),
        ));
        let layout = IntervalLayout {
            keys: 1,
            left_width: 3,
            right_width: 3,
            left_time: 1,
            right_time: 1,
            lo: LO,
            hi: HI,
        };
        IntervalJoinOperator::try_new(layout, vec![DataType::Int64], filter, schema).unwrap()
    }

    /// (side, key, time, value).
    type Row = (u8, Option<i64>, i64, i64);

    /// Disordered rows of both sides (some NULL keys, some late), a
    /// watermark every third batch, then the end.
    fn input() -> Vec<Message> {
        let mut seed = 11u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut messages = Vec::new();
        let mut v = 0;
        for step in 0..60i64 {
            let now = step * 2_000;
            let mut rows: Vec<Row> = Vec::new();
            for _ in 0..5 {
                v += 1;
                let key = (next(13) != 0).then(|| next(4) as i64);
                rows.push((next(2) as u8, key, now - 12_000 + next(16_000) as i64, v));
            }
            let of = |mine: u8, f: &dyn Fn(&Row) -> Option<i64>| {
                rows.iter()
                    .map(|r| if r.0 == mine { f(r) } else { None })
                    .collect::<Vec<_>>()
            };
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ];
            for side in [0, 1] {
                columns.push(Arc::new(Int64Array::from(of(side, &|r| r.1))));
                columns.push(Arc::new(TimestampMicrosecondArray::from(of(side, &|r| {
                    Some(r.2)
                }))));
                columns.push(Arc::new(Int64Array::from(of(side, &|r| Some(r.3)))));
            }
            messages.push(Message::Data(
                RecordBatch::try_new(combined(), columns).unwrap(),
            ));
            if step % 3 == 2 {
                messages.push(Message::Watermark(now - 4_000));
            }
        }
        messages.push(Message::Watermark(EventTime::MAX));
        messages
    }

    #[test]
    fn interval_join_restored_from_a_snapshot_emits_the_same_rows() {
        let messages = input();
        let build = || Box::new(operator()) as Box<dyn Operator>;
        let (expected, metrics) = assert_recovers(&build, &messages);
        assert!(expected.lines().count() > 20, "{expected}");
        assert!(metrics.late_rows > 0);

        // The middle cut restores several arrival batches of each side,
        // and rows of each side find partners only after it.
        let middle = messages.len() / 2;
        let mut op = operator();
        feed(&mut op, &messages[..middle]);
        let state = op.snapshot().unwrap();
        assert_eq!(state.len(), 4);
        let sides = state[1].column(0).as_primitive::<UInt8Type>();
        for side in [0, 1] {
            assert!(sides.iter().filter(|s| *s == Some(side)).count() > 1);
        }
        let later = feed(&mut op, &messages[middle..]);
        for (stored, output) in [(&state[2], 2), (&state[3], 5)] {
            let partnered: Vec<i64> = later
                .iter()
                .flat_map(|b| {
                    b.column(output)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
            let waiting = stored.column(3).as_primitive::<Int64Type>();
            assert!(waiting.values().iter().any(|v| partnered.contains(v)));
        }
    }

    #[test]
    fn interval_join_restores_an_empty_snapshot() {
        let mut op = operator();
        let state = op.snapshot().unwrap();
        assert_eq!(state.len(), 2);
        let mut fresh = operator();
        fresh.restore(state).unwrap();
        assert_eq!(fresh.metrics(), OperatorMetrics::default());
    }
}
