//! [`UpdatingAggregateOperator`]: GROUP BY whose rows change after they are
//! emitted — aggregates without a window, windows with
//! `emit = 'on_update'`, and windows with an allowed lateness — emitting a
//! changelog (docs/design/0005): `(old row, -1), (new row, +1)`.
//!
//! Keys are interned in Arrow's row format; each group keeps one DataFusion
//! row `Accumulator` per aggregate, because reading a row accumulator
//! (`evaluate`) does not consume it, so a group's value can be read after
//! every batch. A batch is sorted by group once (one `take` per column) and
//! each touched group's run goes to `update_batch`, or `retract_batch` for
//! deletes of an updating input. Only touched groups are evaluated. A
//! window's groups are freed once the watermark passes its end plus the
//! allowed lateness; a group whose rows are all retracted is freed at once.
//!
//! A checkpoint is four batches, so a restored operator numbers, orders and
//! frees its groups exactly as the original would: the scalars (watermark,
//! late rows, group slots, state bytes); the live groups (`gid`, net
//! `rows`, `dirty`, `window_end`, `bytes`, the keys `key_<i>` and each
//! accumulator's `state()` as `state_<a>_<f>`); the rows last emitted
//! (`gid`, `value_<a>`); then the dirty list, the free list and the
//! windows' group lists, in their order (`list`, `end`, `gid`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array, new_empty_array,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::aggregate::checkpoint::{self, RowStates};
use super::aggregate::{AggregateCall, accumulate_run, conform, describe, micros};
use crate::error::Result;
use crate::stream::{EventTime, Operator, OperatorMetrics, changelog};

/// How a windowed updating aggregate emits and when it forgets a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowEmission {
    /// Which GROUP BY expression is the window's end.
    pub window_end: usize,
    /// Emit partial rows after every batch (`emit = 'on_update'`) instead
    /// of once when the watermark passes the window's end.
    pub on_update: bool,
    /// How long (µs) after its end a window still accepts rows.
    pub allowed_lateness: i64,
}

struct Group {
    key: Box<[u8]>,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Net rows (inserts minus deletes) in the group.
    rows: i64,
    /// The aggregate values last emitted, if any.
    emitted: Option<Vec<ScalarValue>>,
    dirty: bool,
    window_end: EventTime,
    /// Approximate bytes, refreshed when the group is emitted.
    bytes: usize,
}

pub struct UpdatingAggregateOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<AggregateCall>,
    /// The input carries weights (its last column).
    updating_input: bool,
    window: Option<WindowEmission>,
    converter: RowConverter,
    index: HashMap<Box<[u8]>, usize>,
    groups: Vec<Option<Group>>,
    free: Vec<usize>,
    /// Groups changed since they were last emitted.
    dirty: Vec<usize>,
    /// Window end -> its groups (windowed only).
    windows: BTreeMap<EventTime, Vec<usize>>,
    watermark: Option<EventTime>,
    late_rows: u64,
    state_bytes: usize,
    /// The output: group columns, aggregates, then the weight.
    schema: SchemaRef,
}

impl UpdatingAggregateOperator {
    /// `schema` is the aggregate's output without the weight column.
    pub fn try_new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateCall>,
        input_schema: &Schema,
        updating_input: bool,
        window: Option<WindowEmission>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let fields = group_exprs
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        if !RowConverter::supports_fields(&fields) {
            return Err(crate::error::Error::Unsupported(
                "GROUP BY on these column types in an updating aggregate".into(),
            ));
        }
        let mut operator = UpdatingAggregateOperator {
            group_exprs,
            aggregates,
            updating_input,
            window,
            converter: RowConverter::new(fields)?,
            index: HashMap::new(),
            groups: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            windows: BTreeMap::new(),
            watermark: None,
            late_rows: 0,
            state_bytes: 0,
            schema: changelog::with_weight(&schema),
        };
        // Accumulators DataFusion cannot build fail here, at CREATE; over an
        // updating input they must also be able to retract.
        for a in &operator.aggregates {
            let acc = operator.accumulator(a)?;
            if updating_input && !retracts_in_any_order(a, acc.as_ref()) {
                return Err(crate::error::Error::Unsupported(format!(
                    "{} over an updating input: its accumulator cannot retract rows in any order; \
                     aggregate the source directly, or use count, sum, avg, stddev or var",
                    a.function.name()
                )));
            }
        }
        if operator.group_exprs.is_empty() {
            // A global aggregate has its one row from the start (count 0).
            let gid = operator.new_group(Box::new([]), EventTime::MAX)?;
            operator.mark_dirty(gid);
        }
        Ok(operator)
    }

    fn accumulator(&self, a: &AggregateCall) -> Result<Box<dyn Accumulator>> {
        new_accumulator(a, self.updating_input)
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    fn new_group(&mut self, key: Box<[u8]>, window_end: EventTime) -> Result<usize> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| self.accumulator(a))
            .collect::<Result<Vec<_>>>()?;
        let bytes = key.len() + accumulators.iter().map(|a| a.size()).sum::<usize>() + 64;
        self.state_bytes += bytes;
        let group = Group {
            key: key.clone(),
            accumulators,
            rows: 0,
            emitted: None,
            dirty: false,
            window_end,
            bytes,
        };
        let gid = match self.free.pop() {
            Some(g) => {
                self.groups[g] = Some(group);
                g
            }
            None => {
                self.groups.push(Some(group));
                self.groups.len() - 1
            }
        };
        self.index.insert(key, gid);
        if self.window.is_some() {
            self.windows.entry(window_end).or_default().push(gid);
        }
        Ok(gid)
    }

    fn mark_dirty(&mut self, gid: usize) {
        if let Some(g) = self.groups[gid].as_mut()
            && !g.dirty
        {
            g.dirty = true;
            self.dirty.push(gid);
        }
    }

    fn free_group(&mut self, gid: usize) {
        if let Some(g) = self.groups[gid].take() {
            self.index.remove(&g.key);
            self.state_bytes = self.state_bytes.saturating_sub(g.bytes);
            self.free.push(gid);
        }
    }

    /// The last moment (µs) a window still accepts rows.
    fn expiry(&self, end: EventTime) -> EventTime {
        let lateness = self.window.map(|w| w.allowed_lateness).unwrap_or(0);
        end.saturating_add(lateness)
    }

    /// Emits the changes of the dirty groups that `ready` selects.
    fn emit(&mut self, ready: impl Fn(&Group) -> bool, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut keys = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        let mut weights = Vec::new();
        let mut remaining = Vec::new();
        let mut emptied = Vec::new();
        let global = self.is_global();
        for gid in std::mem::take(&mut self.dirty) {
            let Some(group) = self.groups[gid].as_mut() else {
                continue;
            };
            if !ready(group) {
                remaining.push(gid);
                continue;
            }
            group.dirty = false;
            let new = if group.rows > 0 || global {
                Some(
                    group
                        .accumulators
                        .iter_mut()
                        .map(|a| a.evaluate())
                        .collect::<datafusion::error::Result<Vec<_>>>()?,
                )
            } else {
                None
            };
            if new == group.emitted {
                continue;
            }
            for (row, weight) in [(group.emitted.take(), -1), (new.clone(), 1)] {
                if let Some(row) = row {
                    keys.push(gid);
                    weights.push(weight);
                    for (column, v) in values.iter_mut().zip(row) {
                        column.push(v);
                    }
                }
            }
            group.emitted = new;
            let bytes =
                group.key.len() + group.accumulators.iter().map(|a| a.size()).sum::<usize>() + 64;
            self.state_bytes = (self.state_bytes + bytes).saturating_sub(group.bytes);
            group.bytes = bytes;
            if group.rows <= 0 && !global {
                emptied.push(gid);
            }
        }
        self.dirty = remaining;
        if !keys.is_empty() {
            out.push(self.build(&keys, values, weights)?);
        }
        for gid in emptied {
            self.free_group(gid);
        }
        Ok(())
    }

    fn build(
        &self,
        gids: &[usize],
        values: Vec<Vec<ScalarValue>>,
        weights: Vec<i64>,
    ) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let rows: Vec<_> = gids
            .iter()
            .filter_map(|g| self.groups[*g].as_ref())
            .map(|g| parser.parse(&g.key))
            .collect();
        let mut columns = if self.is_global() {
            Vec::new()
        } else {
            self.converter.convert_rows(rows)?
        };
        for v in values {
            columns.push(ScalarValue::iter_to_array(v)?);
        }
        let rows = weights.len();
        columns.push(Arc::new(Int64Array::from(weights)));
        conform(&self.schema, columns, rows)
    }
}

impl Operator for UpdatingAggregateOperator {
    fn name(&self) -> String {
        let emit = match self.window {
            None => "emit on update".to_string(),
            Some(w) if w.on_update => "emit on update, window closes on watermark".into(),
            Some(w) => format!(
                "emit on watermark, allowed lateness {} ms",
                w.allowed_lateness / 1000
            ),
        };
        let retracting = if self.updating_input {
            ", retracting"
        } else {
            ""
        };
        describe(
            "UpdatingAggregate",
            &self.group_exprs,
            &self.aggregates,
            &format!("{emit}{retracting}"),
        )
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        let keys = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let weights = if self.updating_input {
            Some(changelog::weights(&batch)?.clone())
        } else {
            None
        };
        let ends = match self.window {
            Some(w) => Some(micros(&keys[w.window_end])?),
            None => None,
        };
        let key_rows = if self.is_global() {
            None
        } else {
            Some(self.converter.convert_columns(&keys)?)
        };
        // (group, is a delete, row) for every accepted row.
        let mut order: Vec<(usize, bool, u32)> = Vec::with_capacity(rows);
        for row in 0..rows {
            let end = match &ends {
                Some(e) => {
                    let e = e.as_primitive::<TimestampMicrosecondType>();
                    if e.is_null(row) {
                        return Err(crate::internal!(
                            "a window end is NULL (event time missing)"
                        ));
                    }
                    let end = e.value(row);
                    if self.watermark.is_some_and(|wm| self.expiry(end) <= wm) {
                        self.late_rows += 1;
                        continue;
                    }
                    end
                }
                None => EventTime::MAX,
            };
            let gid = match &key_rows {
                None => 0,
                Some(k) => {
                    let key = k.row(row);
                    match self.index.get(key.as_ref()) {
                        Some(g) => *g,
                        None => self.new_group(key.as_ref().into(), end)?,
                    }
                }
            };
            let delete = weights.as_ref().is_some_and(|w| w.value(row) < 0);
            order.push((gid, delete, row as u32));
        }
        if order.is_empty() {
            return Ok(());
        }
        order.sort_unstable_by_key(|(g, d, _)| (*g, *d));
        let indices = UInt32Array::from_iter_values(order.iter().map(|(_, _, r)| *r));
        // Runs of (group, sign) over the sorted rows.
        let mut runs: Vec<(usize, bool, usize, usize)> = Vec::new();
        let mut start = 0;
        for i in 1..=order.len() {
            if i == order.len() || (order[i].0, order[i].1) != (order[start].0, order[start].1) {
                runs.push((order[start].0, order[start].1, start, i - start));
                start = i;
            }
        }
        for (a, call) in self.aggregates.iter().enumerate() {
            let inputs = call.inputs(&batch, Some(&indices))?;
            for &(gid, delete, offset, len) in &runs {
                let Some(group) = self.groups[gid].as_mut() else {
                    continue;
                };
                accumulate_run(group.accumulators[a].as_mut(), &inputs, offset, len, delete)?;
            }
        }
        for &(gid, delete, _, len) in &runs {
            if let Some(group) = self.groups[gid].as_mut() {
                group.rows += if delete { -(len as i64) } else { len as i64 };
            }
            self.mark_dirty(gid);
        }
        // Emit now what will not wait for the watermark: aggregates without
        // a window, `on_update` windows, and corrections of windows already
        // emitted (within the allowed lateness).
        let wm = self.watermark;
        match self.window {
            None => self.emit(|_| true, out),
            Some(w) if w.on_update => self.emit(|_| true, out),
            Some(_) => self.emit(|g| wm.is_some_and(|wm| g.window_end <= wm), out),
        }
    }

    fn on_watermark(&mut self, watermark: EventTime, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        self.watermark = Some(watermark);
        if self.window.is_none() {
            // A global aggregate shows its first row (count 0) once time moves.
            return self.emit(|_| true, out);
        }
        self.emit(|g| g.window_end <= watermark, out)?;
        let lateness = self.window.map(|w| w.allowed_lateness).unwrap_or(0);
        let horizon = watermark.saturating_sub(lateness);
        let open = self.windows.split_off(&horizon.saturating_add(1));
        let expired = std::mem::replace(&mut self.windows, open);
        for gid in expired.into_values().flatten() {
            // An expired group's row stays in the view; only its state goes.
            if self.groups[gid]
                .as_ref()
                .is_some_and(|g| self.expiry(g.window_end) <= watermark)
            {
                self.free_group(gid);
            }
        }
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics {
            state_rows: self.index.len() as u64,
            state_bytes: self.state_bytes as u64,
            late_rows: self.late_rows,
        }
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let scalars = checkpoint::scalars(&[
            ("watermark", self.watermark),
            ("late_rows", Some(self.late_rows as i64)),
            ("slots", Some(self.groups.len() as i64)),
            ("state_bytes", Some(self.state_bytes as i64)),
        ])?;
        let accumulators = self
            .groups
            .iter_mut()
            .flatten()
            .map(|g| &mut g.accumulators);
        let states = row_states(&self.aggregates, self.updating_input)?.take(accumulators)?;
        let live: Vec<(usize, &Group)> = (self.groups.iter().enumerate())
            .filter_map(|(gid, g)| Some((gid, g.as_ref()?)))
            .collect();
        let of = |f: fn(&Group) -> i64| checkpoint::int64(live.iter().map(|(_, g)| f(g)));
        let dirty = BooleanArray::from_iter(live.iter().map(|(_, g)| Some(g.dirty)));
        let mut columns: Vec<(String, ArrayRef)> = vec![
            ("gid".into(), gids(live.iter().map(|(gid, _)| *gid))),
            ("rows".into(), of(|g| g.rows)),
            ("dirty".into(), Arc::new(dirty)),
            ("window_end".into(), of(|g| g.window_end)),
            ("bytes".into(), of(|g| g.bytes as i64)),
        ];
        if !self.is_global() {
            let parser = self.converter.parser();
            let keys = live.iter().map(|(_, g)| parser.parse(&g.key));
            let keys = self.converter.convert_rows(keys)?.into_iter();
            columns.extend(keys.enumerate().map(|(i, k)| (format!("key_{i}"), k)));
        }
        columns.extend(states);
        let groups = checkpoint::batch(columns, live.len())?;

        let emitted: Vec<(usize, &Vec<ScalarValue>)> = (live.iter())
            .filter_map(|(gid, g)| Some((*gid, g.emitted.as_ref()?)))
            .collect();
        let mut columns = vec![("gid".to_string(), gids(emitted.iter().map(|(g, _)| *g)))];
        for (a, call) in self.aggregates.iter().enumerate() {
            let values = if emitted.is_empty() {
                new_empty_array(call.function.field().data_type())
            } else {
                ScalarValue::iter_to_array(emitted.iter().map(|(_, e)| e[a].clone()))?
            };
            columns.push((format!("value_{a}"), values));
        }
        let emitted = checkpoint::batch(columns, emitted.len())?;

        // The lists whose order decides which group comes out or is reused
        // first: (list, window end, group).
        let lists = (self.dirty.iter().map(|g| (DIRTY, 0, *g)))
            .chain(self.free.iter().map(|g| (FREE, 0, *g)))
            .chain((self.windows.iter()).flat_map(|(e, g)| g.iter().map(|g| (WINDOW, *e, *g))));
        let (list, (ends, members)): (Vec<i64>, (Vec<i64>, Vec<usize>)) =
            lists.map(|(l, e, g)| (l, (e, g))).unzip();
        let rows = list.len();
        let lists = vec![
            ("list".into(), checkpoint::int64(list)),
            ("end".into(), checkpoint::int64(ends)),
            ("gid".into(), gids(members.into_iter())),
        ];
        let lists = checkpoint::batch(lists, rows)?;
        Ok(vec![scalars, groups, emitted, lists])
    }

    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        let [scalars, groups, emitted, lists] = checkpoint::expect(state, "updating aggregate")?;
        let count = |name| {
            Ok::<_, crate::error::Error>(checkpoint::scalar(&scalars, name)?.unwrap_or(0) as usize)
        };
        let slots = count("slots")?;
        self.watermark = checkpoint::scalar(&scalars, "watermark")?;
        self.late_rows = count("late_rows")? as u64;
        self.state_bytes = count("state_bytes")?;
        let slot = |gid: i64| -> Result<usize> {
            (usize::try_from(gid).ok().filter(|g| *g < slots))
                .ok_or_else(|| crate::internal!("a checkpoint names group {gid} of {slots}"))
        };

        self.groups = (0..slots).map(|_| None).collect();
        self.index.clear();
        let keys = if self.is_global() {
            None
        } else {
            let keys = checkpoint::numbered(&groups, "key", self.group_exprs.len())?;
            Some(self.converter.convert_columns(&keys)?)
        };
        let row_states = row_states(&self.aggregates, self.updating_input)?;
        let states = row_states.columns(&groups)?;
        let [ids, rows, ends, bytes] =
            ["gid", "rows", "window_end", "bytes"].map(|name| checkpoint::int64s(&groups, name));
        let (ids, rows, ends, bytes) = (ids?, rows?, ends?, bytes?);
        let dirty = (checkpoint::column(&groups, "dirty")?.as_boolean_opt())
            .ok_or_else(|| crate::internal!("checkpoint column dirty is not Boolean"))?;
        for row in 0..groups.num_rows() {
            let key: Box<[u8]> = match &keys {
                Some(k) => k.row(row).as_ref().into(),
                None => Box::new([]),
            };
            let gid = slot(ids.value(row))?;
            self.index.insert(key.clone(), gid);
            self.groups[gid] = Some(Group {
                key,
                accumulators: row_states.load(&states, row)?,
                rows: rows.value(row),
                emitted: None,
                dirty: dirty.value(row),
                window_end: ends.value(row),
                bytes: bytes.value(row) as usize,
            });
        }

        let ids = checkpoint::int64s(&emitted, "gid")?;
        let values = checkpoint::numbered(&emitted, "value", self.aggregates.len())?;
        for row in 0..emitted.num_rows() {
            let group = (self.groups[slot(ids.value(row))?].as_mut())
                .ok_or_else(|| crate::internal!("a checkpoint's emitted row has no group"))?;
            let row_values = (values.iter())
                .map(|v| ScalarValue::try_from_array(v, row))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            group.emitted = Some(row_values);
        }

        let [list, ends, ids] = ["list", "end", "gid"].map(|n| checkpoint::int64s(&lists, n));
        let (list, ends, ids) = (list?, ends?, ids?);
        (self.dirty, self.free) = (Vec::new(), Vec::new());
        self.windows.clear();
        for row in 0..lists.num_rows() {
            let gid = slot(ids.value(row))?;
            match list.value(row) {
                DIRTY => self.dirty.push(gid),
                FREE => self.free.push(gid),
                _ => self.windows.entry(ends.value(row)).or_default().push(gid),
            }
        }
        Ok(())
    }
}

/// Over an updating input, the accumulator that can also retract. Its
/// `state()` and `merge_batch` restore what retraction needs too: the
/// accepted aggregates are algebraic (counts, sums, moments).
fn new_accumulator(a: &AggregateCall, retracting: bool) -> Result<Box<dyn Accumulator>> {
    Ok(if retracting {
        a.function.create_sliding_accumulator()?
    } else {
        a.function.create_accumulator()?
    })
}

/// How checkpoints read and rebuild the groups' accumulators.
fn row_states(aggregates: &[AggregateCall], retracting: bool) -> Result<RowStates<'_>> {
    RowStates::try_new(aggregates.len(), move |i| {
        new_accumulator(&aggregates[i], retracting)
    })
}

fn gids(gids: impl Iterator<Item = usize>) -> ArrayRef {
    checkpoint::int64(gids.map(|g| g as i64))
}

/// The lists of a checkpoint's last batch.
const DIRTY: i64 = 0;
const FREE: i64 = 1;
const WINDOW: i64 = 2;

/// Whether retracting any earlier row (not only the oldest) is exact.
/// DataFusion's sliding min/max and first/last retract in arrival order
/// only (they serve window frames), so they are refused by name.
fn retracts_in_any_order(call: &AggregateCall, accumulator: &dyn Accumulator) -> bool {
    const ALGEBRAIC: &[&str] = &[
        "count",
        "sum",
        "avg",
        "mean",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "var",
        "var_pop",
        "var_samp",
        "var_population",
        "var_sample",
        "variance",
        "covar",
        "covar_pop",
        "covar_samp",
        "corr",
        "bool_and",
        "bool_or",
    ];
    let name = call.function.fun().name().to_lowercase();
    accumulator.supports_retract_batch()
        && !call.function.is_distinct()
        && ALGEBRAIC.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::aggregate::testing::{
        S, assert_recovers, column, count_sum_avg, keyed_input, keyed_rows as rows,
    };
    use crate::stream::Message;
    use datafusion::arrow::datatypes::Field;

    /// `count(v), sum(v), avg(v)` grouped by `keys` (input columns).
    fn operator(
        keys: &[&str],
        updating: bool,
        window: Option<WindowEmission>,
    ) -> Box<dyn Operator> {
        let input = keyed_input();
        let (aggregates, values) = count_sum_avg(&input);
        let keyed = keys
            .iter()
            .map(|k| input.field_with_name(k).unwrap().clone());
        let fields: Vec<Field> = keyed.map(|f| f.with_nullable(true)).chain(values).collect();
        let groups = keys.iter().map(|k| column(k, &input)).collect();
        let schema = Arc::new(Schema::new(fields));
        let op = UpdatingAggregateOperator::try_new(
            groups, aggregates, &input, updating, window, schema,
        );
        Box::new(op.unwrap())
    }

    #[test]
    fn retractions_after_a_checkpoint_reach_restored_groups() {
        // b empties and frees its slot, d reuses it; a is retracted to
        // nothing and comes back.
        let messages = vec![
            rows(&[("a", 0, 1, 1), ("b", 0, 2, 1), ("a", 0, 3, 1)]),
            Message::Watermark(5 * S),
            rows(&[("a", 0, 1, -1), ("c", 0, 4, 1), ("b", 0, 5, 1)]),
            rows(&[("b", 0, 2, -1), ("b", 0, 5, -1)]),
            rows(&[("d", 0, 6, 1)]),
            rows(&[("a", 0, 3, -1), ("a", 0, 7, 1), ("b", 0, 8, 1)]),
            Message::Watermark(10 * S),
            rows(&[("c", 0, 4, -1), ("d", 0, 6, -1), ("a", 0, 7, -1)]),
            rows(&[("e", 0, 1, 1), ("a", 0, 2, 1), ("b", 0, 8, -1)]),
        ];
        let (out, _) = assert_recovers(&|| operator(&["k"], true, None), &messages);
        let expected = "\
+---+---+-------+------+----------+
| k | n | total | mean | __weight |
+---+---+-------+------+----------+
| a | 2 | 4     | 2.0  | 1        |
| b | 1 | 2     | 2.0  | 1        |
| a | 2 | 4     | 2.0  | -1       |
| a | 1 | 3     | 3.0  | 1        |
| b | 1 | 2     | 2.0  | -1       |
| b | 2 | 7     | 3.5  | 1        |
| c | 1 | 4     | 4.0  | 1        |
| b | 2 | 7     | 3.5  | -1       |
| d | 1 | 6     | 6.0  | 1        |
| a | 1 | 3     | 3.0  | -1       |
| a | 1 | 7     | 7.0  | 1        |
| b | 1 | 8     | 8.0  | 1        |
| a | 1 | 7     | 7.0  | -1       |
| d | 1 | 6     | 6.0  | -1       |
| c | 1 | 4     | 4.0  | -1       |
| a | 1 | 2     | 2.0  | 1        |
| e | 1 | 1     | 1.0  | 1        |
| b | 1 | 8     | 8.0  | -1       |
+---+---+-------+------+----------+";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_global_aggregate_resumes_its_one_row() {
        let messages = vec![
            Message::Watermark(S),
            rows(&[("a", 0, 1, 1), ("b", 0, 2, 1)]),
            rows(&[("a", 0, 1, -1)]),
            Message::Watermark(2 * S),
            rows(&[("b", 0, 2, -1)]),
            rows(&[("c", 0, 9, 1)]),
        ];
        let (out, _) = assert_recovers(&|| operator(&[], true, None), &messages);
        let expected = "\
+---+-------+------+----------+
| n | total | mean | __weight |
+---+-------+------+----------+
| 0 |       |      | 1        |
| 0 |       |      | -1       |
| 2 | 3     | 1.5  | 1        |
| 2 | 3     | 1.5  | -1       |
| 1 | 2     | 2.0  | 1        |
| 1 | 2     | 2.0  | -1       |
| 0 |       |      | 1        |
| 0 |       |      | -1       |
| 1 | 9     | 9.0  | 1        |
+---+-------+------+----------+";
        assert_eq!(out, expected);
    }

    #[test]
    fn windows_with_lateness_resume_their_corrections() {
        let messages = vec![
            rows(&[("a", 10, 1, 1), ("b", 10, 2, 1), ("a", 20, 3, 1)]),
            Message::Watermark(5 * S),
            rows(&[("a", 10, 4, 1), ("c", 20, 5, 1)]),
            Message::Watermark(10 * S),
            rows(&[("a", 10, 6, 1), ("b", 20, 1, 1)]),
            Message::Watermark(20 * S),
            rows(&[("a", 10, 7, 1), ("a", 20, 2, 1), ("c", 30, 1, 1)]),
            Message::Watermark(35 * S),
            rows(&[("c", 30, 9, 1), ("a", 20, 1, 1)]),
            Message::Watermark(100 * S),
        ];
        // Corrections within the lateness; a 10 and a 20 come too late.
        let on_watermark = "\
+---+---------------------+---+-------+--------------------+----------+
| k | window_end          | n | total | mean               | __weight |
+---+---------------------+---+-------+--------------------+----------+
| a | 1970-01-01T00:00:10 | 2 | 5     | 2.5                | 1        |
| b | 1970-01-01T00:00:10 | 1 | 2     | 2.0                | 1        |
| a | 1970-01-01T00:00:10 | 2 | 5     | 2.5                | -1       |
| a | 1970-01-01T00:00:10 | 3 | 11    | 3.6666666666666665 | 1        |
| a | 1970-01-01T00:00:20 | 1 | 3     | 3.0                | 1        |
| c | 1970-01-01T00:00:20 | 1 | 5     | 5.0                | 1        |
| b | 1970-01-01T00:00:20 | 1 | 1     | 1.0                | 1        |
| a | 1970-01-01T00:00:20 | 1 | 3     | 3.0                | -1       |
| a | 1970-01-01T00:00:20 | 2 | 5     | 2.5                | 1        |
| c | 1970-01-01T00:00:30 | 1 | 1     | 1.0                | 1        |
| c | 1970-01-01T00:00:30 | 1 | 1     | 1.0                | -1       |
| c | 1970-01-01T00:00:30 | 2 | 10    | 5.0                | 1        |
+---+---------------------+---+-------+--------------------+----------+";
        // Emitting on update, partial rows come out at once; restoring
        // must resume them the same way.
        for on_update in [false, true] {
            let window = WindowEmission {
                window_end: 1,
                on_update,
                allowed_lateness: 10 * S,
            };
            let build = || operator(&["k", "window_end"], false, Some(window));
            let (out, metrics) = assert_recovers(&build, &messages);
            assert_eq!(metrics.late_rows, 2);
            assert_eq!(out == on_watermark, !on_update);
        }
    }
}
