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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt8Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{filter_record_batch, interleave, max as max_kernel};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{conform, micros};
use super::join::{key_converter, take_all};
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
}
