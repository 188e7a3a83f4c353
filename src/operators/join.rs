//! Joins: [`LookupJoinOperator`] (a stream against a table's current rows)
//! and [`WindowJoinOperator`] (two streams on the same event-time window),
//! sharing one hash-join kernel over Arrow's row format.
//!
//! A lookup join probes each stream batch against the table as it is when
//! the batch is processed (processing-time semantics, as Flink's lookup
//! join and RisingWave's temporal join): later table changes do not revise
//! rows already emitted. The build side is rebuilt only when the table's
//! snapshot changes.
//!
//! A window join buffers both sides per window and joins a window once the
//! watermark passes its end, emitting each result row once (append-only),
//! then frees the window. Its input is one stream of *combined* batches:
//! `[__side, join keys..., left columns..., right columns...]`, where each
//! side fills its own columns and leaves the other's NULL (docs/design/0006).
//!
//! Checkpoints: a window join's state is its buffered rows, one batch per
//! side over every open window, and a one-row batch of its scalars (see
//! [`WindowJoinOperator::snapshot`]). A lookup join holds no state of its
//! own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt8Array, UInt32Array, UInt32Builder};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{checkpoint, conform, micros};
use crate::error::Result;
use crate::storage::StoredTable;
use crate::stream::{Chain, EventTime, Message, Operator, OperatorMetrics};

/// Build-side rows by key, in Arrow's row format. NULL keys never match.
struct HashIndex {
    map: HashMap<Box<[u8]>, Vec<u32>>,
}

impl HashIndex {
    fn build(converter: &RowConverter, keys: &[ArrayRef]) -> Result<Self> {
        let rows = converter.convert_columns(keys)?;
        let mut map: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for i in 0..rows.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let key = rows.row(i);
            match map.get_mut(key.as_ref()) {
                Some(v) => v.push(i as u32),
                None => {
                    map.insert(key.as_ref().into(), vec![i as u32]);
                }
            }
        }
        Ok(HashIndex { map })
    }

    /// (probe row, build row) for every match; with `keep_unmatched`, a
    /// probe row without a match appears once with a NULL build row.
    fn probe(
        &self,
        converter: &RowConverter,
        keys: &[ArrayRef],
        keep_unmatched: bool,
    ) -> Result<(UInt32Array, UInt32Array)> {
        let rows = converter.convert_columns(keys)?;
        let mut probe = UInt32Builder::new();
        let mut build = UInt32Builder::new();
        for i in 0..rows.num_rows() {
            let matches = if keys.iter().any(|k| k.is_null(i)) {
                None
            } else {
                self.map.get(rows.row(i).as_ref())
            };
            match matches {
                Some(m) => {
                    for b in m {
                        probe.append_value(i as u32);
                        build.append_value(*b);
                    }
                }
                None if keep_unmatched => {
                    probe.append_value(i as u32);
                    build.append_null();
                }
                None => {}
            }
        }
        Ok((probe.finish(), build.finish()))
    }
}

pub(super) fn key_converter(keys: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        keys.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

pub(super) fn take_all(columns: &[ArrayRef], idx: &UInt32Array) -> Result<Vec<ArrayRef>> {
    columns.iter().map(|c| Ok(take(c, idx, None)?)).collect()
}

/// A counter of a checkpoint's scalars.
pub(super) fn count(batch: &RecordBatch, name: &str) -> Result<u64> {
    checkpoint::scalar(batch, name)?
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| crate::internal!("checkpoint state has no count {name}"))
}

fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    Ok(exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect::<datafusion::error::Result<Vec<_>>>()?)
}

/// The table side of a lookup join: the table and the stateless steps
/// (filters, projections) between it and the join.
pub struct LookupTable {
    pub table: Arc<StoredTable>,
    pub steps: Chain,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The rows' schema after `steps`.
    pub schema: SchemaRef,
}

/// A stream joined with a table's current rows.
///
/// No checkpoint state (the default `snapshot`/`restore`): `built` is a
/// cache of the live table rebuilt whenever the table's snapshot changes,
/// and `table.steps` are stateless. After a restore, replayed stream rows
/// meet the table as it is then (processing-time semantics).
pub struct LookupJoinOperator {
    table: LookupTable,
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The stream is the join's left input (else its right).
    stream_is_left: bool,
    /// Keep stream rows without a match (LEFT join with the stream on the
    /// left, RIGHT join with it on the right).
    keep_unmatched: bool,
    /// Columns of the stream side, without a weight column.
    stream_width: usize,
    /// The stream carries weights (kept, after the join's columns).
    updating: bool,
    converter: RowConverter,
    /// The snapshot the build side was made from, and the build side.
    built: Option<(Arc<Vec<RecordBatch>>, RecordBatch, HashIndex)>,
    schema: SchemaRef,
}

impl LookupJoinOperator {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        table: LookupTable,
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        stream_is_left: bool,
        keep_unmatched: bool,
        stream_width: usize,
        updating: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(LookupJoinOperator {
            table,
            stream_keys,
            stream_is_left,
            keep_unmatched,
            stream_width,
            updating,
            converter: key_converter(&key_types)?,
            built: None,
            schema,
        })
    }

    /// The table's rows after its steps, indexed by key; rebuilt when the
    /// table has changed since the last batch.
    fn build_side(&mut self) -> Result<()> {
        let snapshot = self.table.table.snapshot();
        if self
            .built
            .as_ref()
            .is_some_and(|(s, _, _)| Arc::ptr_eq(s, &snapshot))
        {
            return Ok(());
        }
        let mut out = Vec::new();
        for b in snapshot.iter() {
            self.table.steps.push(Message::Data(b.clone()), &mut out)?;
        }
        let batches: Vec<RecordBatch> = out
            .into_iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .collect();
        let rows = concat_batches(&self.table.schema, &batches)?;
        let keys = evaluate(&self.table.keys, &rows)?;
        let index = HashIndex::build(&self.converter, &keys)?;
        self.built = Some((snapshot, rows, index));
        Ok(())
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> String {
        let keys: Vec<String> = self.stream_keys.iter().map(|e| e.to_string()).collect();
        format!(
            "LookupJoin: stream [{}] against the table's current rows{}",
            keys.join(", "),
            if self.keep_unmatched {
                ", keeping unmatched stream rows"
            } else {
                ""
            }
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.build_side()?;
        let Some((_, table_rows, index)) = &self.built else {
            return Ok(());
        };
        let keys = evaluate(&self.stream_keys, &batch)?;
        let (probe, build) = index.probe(&self.converter, &keys, self.keep_unmatched)?;
        if probe.is_empty() {
            return Ok(());
        }
        let stream_columns = take_all(&batch.columns()[..self.stream_width], &probe)?;
        let table_columns = take_all(table_rows.columns(), &build)?;
        let mut columns = if self.stream_is_left {
            [stream_columns, table_columns].concat()
        } else {
            [table_columns, stream_columns].concat()
        };
        if self.updating {
            columns.push(take(
                batch.columns()[self.stream_width].as_ref(),
                &probe,
                None,
            )?);
        }
        out.push(conform(&self.schema, columns, probe.len())?);
        Ok(())
    }
}

/// Where a window join's combined input keeps what.
#[derive(Debug, Clone, Copy)]
pub struct CombinedLayout {
    /// Join key columns start at 1 (after `__side`).
    pub keys: usize,
    /// Which key is the window's end.
    pub window_key: usize,
    pub left_width: usize,
    pub right_width: usize,
}

impl CombinedLayout {
    fn key_range(&self) -> std::ops::Range<usize> {
        1..1 + self.keys
    }

    fn side_range(&self, left: bool) -> std::ops::Range<usize> {
        let start = 1 + self.keys;
        if left {
            start..start + self.left_width
        } else {
            start + self.left_width..start + self.left_width + self.right_width
        }
    }
}

/// One side's buffered rows of one window: keys then the side's columns.
#[derive(Default)]
struct WindowRows {
    left: Vec<RecordBatch>,
    right: Vec<RecordBatch>,
}

/// Two streams joined on equal keys within the same event-time window.
pub struct WindowJoinOperator {
    layout: CombinedLayout,
    /// Keep left rows without a match (LEFT join).
    keep_unmatched: bool,
    /// A non-equality condition over the joined row (inner joins only).
    filter: Option<Arc<dyn PhysicalExpr>>,
    converter: RowConverter,
    windows: BTreeMap<EventTime, WindowRows>,
    watermark: Option<EventTime>,
    late_rows: u64,
    schema: SchemaRef,
}

impl WindowJoinOperator {
    pub fn try_new(
        layout: CombinedLayout,
        key_types: Vec<DataType>,
        keep_unmatched: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        Ok(WindowJoinOperator {
            layout,
            keep_unmatched,
            filter,
            converter: key_converter(&key_types)?,
            windows: BTreeMap::new(),
            watermark: None,
            late_rows: 0,
            schema,
        })
    }

    /// Adds one side's rows (keys, then the side's columns) to their
    /// windows; rows of windows already joined are late.
    fn buffer(&mut self, rows: RecordBatch, left: bool) -> Result<()> {
        let ends = micros(rows.column(self.layout.window_key))?;
        let ends = ends.as_primitive::<TimestampMicrosecondType>();
        let mut by_window: BTreeMap<EventTime, Vec<u32>> = BTreeMap::new();
        for i in 0..ends.len() {
            if ends.is_null(i) {
                continue;
            }
            let end = ends.value(i);
            if self.watermark.is_some_and(|wm| end <= wm) {
                self.late_rows += 1;
                continue;
            }
            by_window.entry(end).or_default().push(i as u32);
        }
        for (end, idx) in by_window {
            let part = if idx.len() == rows.num_rows() {
                rows.clone()
            } else {
                let idx = UInt32Array::from(idx);
                RecordBatch::try_new(rows.schema(), take_all(rows.columns(), &idx)?)?
            };
            let w = self.windows.entry(end).or_default();
            if left {
                w.left.push(part);
            } else {
                w.right.push(part);
            }
        }
        Ok(())
    }

    fn join(&self, rows: WindowRows) -> Result<Option<RecordBatch>> {
        let (Some(l0), Some(r0)) = (rows.left.first(), rows.right.first()) else {
            if !self.keep_unmatched || rows.left.is_empty() {
                return Ok(None);
            }
            let left = concat_batches(&rows.left[0].schema(), &rows.left)?;
            let none = UInt32Array::new_null(left.num_rows());
            let all = UInt32Array::from_iter_values(0..left.num_rows() as u32);
            return self.assemble(&left, None, &all, &none);
        };
        let left = concat_batches(&l0.schema(), &rows.left)?;
        let right = concat_batches(&r0.schema(), &rows.right)?;
        let k = self.layout.keys;
        let index = HashIndex::build(&self.converter, &right.columns()[..k])?;
        let (li, ri) = index.probe(&self.converter, &left.columns()[..k], self.keep_unmatched)?;
        if li.is_empty() {
            return Ok(None);
        }
        self.assemble(&left, Some(&right), &li, &ri)
    }

    fn assemble(
        &self,
        left: &RecordBatch,
        right: Option<&RecordBatch>,
        li: &UInt32Array,
        ri: &UInt32Array,
    ) -> Result<Option<RecordBatch>> {
        let k = self.layout.keys;
        let mut columns = take_all(&left.columns()[k..], li)?;
        match right {
            Some(r) => columns.extend(take_all(&r.columns()[k..], ri)?),
            None => {
                for f in &self.schema.fields()[self.layout.left_width..] {
                    columns.push(datafusion::arrow::array::new_null_array(
                        f.data_type(),
                        li.len(),
                    ));
                }
            }
        }
        let joined = conform(&self.schema, columns, li.len())?;
        let joined = match &self.filter {
            Some(f) => {
                let mask = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                filter_record_batch(&joined, mask.as_boolean())?
            }
            None => joined,
        };
        Ok((joined.num_rows() > 0).then_some(joined))
    }
}

impl Operator for WindowJoinOperator {
    fn name(&self) -> String {
        format!(
            "WindowJoin: {} on {} keys (window end included), emit on watermark{}",
            if self.keep_unmatched { "left" } else { "inner" },
            self.layout.keys,
            if self.filter.is_some() {
                ", with a condition"
            } else {
                ""
            }
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        let side = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
        for left in [true, false] {
            let mask = eq(side, &UInt8Array::new_scalar(if left { 0 } else { 1 }))?;
            let rows = filter_record_batch(&batch, &mask)?;
            if rows.num_rows() == 0 {
                continue;
            }
            let columns: Vec<usize> = self
                .layout
                .key_range()
                .chain(self.layout.side_range(left))
                .collect();
            self.buffer(rows.project(&columns)?, left)?;
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
        for (_, rows) in closed {
            if let Some(b) = self.join(rows)? {
                out.push(b);
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
            for b in w.left.iter().chain(&w.right) {
                m.state_rows += b.num_rows() as u64;
                m.state_bytes += b.get_array_memory_size() as u64;
            }
        }
        m
    }

    /// `[scalars, left rows?, right rows?]`: the scalars (`watermark`,
    /// `late_rows`, `left_rows`, `right_rows`), then each side's buffered
    /// rows over all open windows concatenated in window order (keys, then
    /// the side's columns), present when the side has rows. The window of
    /// a row is its window key, so restore re-buckets them.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let mut sides = Vec::new();
        for left in [true, false] {
            let batches: Vec<&RecordBatch> = self
                .windows
                .values()
                .flat_map(|w| if left { &w.left } else { &w.right })
                .collect();
            sides.push(match batches.first() {
                Some(first) => Some(concat_batches(&first.schema(), batches.iter().copied())?),
                None => None,
            });
        }
        let rows = |s: &Option<RecordBatch>| s.as_ref().map_or(0, |b| b.num_rows() as i64);
        let mut state = vec![checkpoint::scalars(&[
            ("watermark", self.watermark),
            ("late_rows", Some(self.late_rows as i64)),
            ("left_rows", Some(rows(&sides[0]))),
            ("right_rows", Some(rows(&sides[1]))),
        ])?];
        state.extend(sides.into_iter().flatten());
        Ok(state)
    }

    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        if !self.windows.is_empty() || self.watermark.is_some() {
            return Err(crate::internal!("{} restored after it ran", self.name()));
        }
        let mut state = state.into_iter();
        let Some(meta) = state.next() else {
            return Ok(());
        };
        self.watermark = checkpoint::scalar(&meta, "watermark")?;
        for (left, name) in [(true, "left_rows"), (false, "right_rows")] {
            let expected = count(&meta, name)?;
            if expected == 0 {
                continue;
            }
            let rows = state
                .next()
                .filter(|b| b.num_rows() as u64 == expected)
                .ok_or_else(|| crate::internal!("checkpoint state lacks {expected} {name}"))?;
            let width = if left {
                self.layout.left_width
            } else {
                self.layout.right_width
            };
            if rows.num_columns() != self.layout.keys + width {
                return Err(crate::internal!(
                    "checkpoint {name} have {} columns, the plan {}",
                    rows.num_columns(),
                    self.layout.keys + width
                ));
            }
            self.buffer(rows, left)?;
        }
        if state.next().is_some() {
            return Err(crate::internal!("checkpoint state has extra batches"));
        }
        // Buffered rows are never late; the counter is the checkpoint's.
        self.late_rows = count(&meta, "late_rows")?;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashSet;

    use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray, UInt8Array};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimeUnit};

    use super::super::aggregate::testing::assert_recovers;
    use super::*;

    const WINDOW: i64 = 10_000;

    /// `[__side, __k0 id, __k1 window_end, l_id, l_v, r_id, r_v]`.
    fn combined() -> SchemaRef {
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        Arc::new(Schema::new(vec![
            Field::new("__side", DataType::UInt8, false),
            int("__k0"),
            Field::new(
                "__k1",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            int("l_id"),
            int("l_v"),
            int("r_id"),
            int("r_v"),
        ]))
    }

    fn operator(keep_unmatched: bool) -> WindowJoinOperator {
        let int = |n: &str| Field::new(n, DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![
            int("l_id"),
            int("l_v"),
            int("r_id"),
            int("r_v"),
        ]));
        let layout = CombinedLayout {
            keys: 2,
            window_key: 1,
            left_width: 2,
            right_width: 2,
        };
        let key_types = vec![
            DataType::Int64,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ];
        WindowJoinOperator::try_new(layout, key_types, keep_unmatched, None, schema).unwrap()
    }

    /// Disordered rows of both sides (some NULL keys, some late) over
    /// advancing windows, a watermark every third batch, then the end.
    fn input() -> Vec<Message> {
        let mut seed = 7u64;
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
            let (mut side, mut id, mut end, mut lv, mut rv) =
                (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..6 {
                let s = next(2) as u8;
                let k = (next(13) != 0).then(|| next(4) as i64);
                let t = now - 15_000 + next(20_000) as i64;
                v += 1;
                side.push(s);
                id.push(k);
                end.push((t.div_euclid(WINDOW) + 1) * WINDOW);
                lv.push((s == 0).then_some(v));
                rv.push((s == 1).then_some(v));
            }
            let ids = |mine: u8| -> Int64Array {
                side.iter()
                    .zip(&id)
                    .map(|(s, k)| if *s == mine { *k } else { None })
                    .collect()
            };
            let batch = RecordBatch::try_new(
                combined(),
                vec![
                    Arc::new(UInt8Array::from(side.clone())),
                    Arc::new(Int64Array::from(id.clone())),
                    Arc::new(TimestampMicrosecondArray::from(end)),
                    Arc::new(ids(0)),
                    Arc::new(Int64Array::from(lv)),
                    Arc::new(ids(1)),
                    Arc::new(Int64Array::from(rv)),
                ],
            )
            .unwrap();
            messages.push(Message::Data(batch));
            if step % 3 == 2 {
                messages.push(Message::Watermark(now - 5_000));
            }
        }
        messages.push(Message::Watermark(EventTime::MAX));
        messages
    }

    pub(in crate::operators) fn feed(
        op: &mut dyn Operator,
        messages: &[Message],
    ) -> Vec<RecordBatch> {
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

    #[test]
    fn window_join_restored_from_a_snapshot_emits_the_same_rows() {
        for keep_unmatched in [false, true] {
            let messages = input();
            let build = || Box::new(operator(keep_unmatched)) as Box<dyn Operator>;
            let (expected, metrics) = assert_recovers(&build, &messages);
            assert!(expected.lines().count() > 20, "{expected}");
            assert!(metrics.late_rows > 0);

            // The middle cut restores rows of both sides, some left ones
            // (by key and window) without a right partner yet.
            let mut op = operator(keep_unmatched);
            feed(&mut op, &messages[..messages.len() / 2]);
            let state = op.snapshot().unwrap();
            assert_eq!(state.len(), 3);
            assert!(count(&state[0], "left_rows").unwrap() > 0);
            assert!(count(&state[0], "right_rows").unwrap() > 0);
            let pairs = |b: &RecordBatch| -> HashSet<(Option<i64>, i64)> {
                let ids = b.column(0).as_primitive::<Int64Type>();
                let ends = b.column(1).as_primitive::<TimestampMicrosecondType>();
                (0..b.num_rows())
                    .map(|i| (ids.is_valid(i).then(|| ids.value(i)), ends.value(i)))
                    .collect()
            };
            assert!(!pairs(&state[1]).is_subset(&pairs(&state[2])));
        }
    }

    #[test]
    fn window_join_restores_an_empty_snapshot() {
        let mut op = operator(true);
        let state = op.snapshot().unwrap();
        assert_eq!(state.len(), 1);
        let mut fresh = operator(true);
        fresh.restore(state).unwrap();
        assert_eq!(fresh.metrics(), OperatorMetrics::default());
    }
}
