//! Joins in a materialized view (docs/design/0006): a stream with a table
//! becomes a lookup join in the stream's chain; two streams on the same
//! window become one combined input feeding a window join.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, Operator, logical_plan::Join};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::scalar::ScalarValue;

use super::{Input, Part, Step, WINDOW_END, Walk, column, unsupported};
use crate::connectors::SourceTable;
use crate::error::Result;
use crate::operators::{CombinedLayout, IntervalLayout, ViewTable};
use crate::storage::{StoredTable, TableHandle};

/// Whether `plan` reads a source or a materialized view anywhere.
fn is_stream(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(match node {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
                .map(|p| {
                    let any = p.as_ref() as &dyn Any;
                    any.is::<SourceTable>() || any.is::<ViewTable>()
                })
                .unwrap_or(false),
            _ => false,
        })
    })
    .unwrap_or(false)
}

impl Walk<'_> {
    pub(super) fn visit_join(&self, join: &Join) -> Result<Part> {
        match (is_stream(&join.left), is_stream(&join.right)) {
            (true, true) => self.window_join(join),
            (true, false) => self.lookup_join(join, true),
            (false, true) => self.lookup_join(join, false),
            (false, false) => Err(unsupported(
                "a join of tables only in a materialized view; the view must read a source",
            )),
        }
    }

    /// The table side of a lookup join: a stored table under filters and
    /// projections.
    fn visit_table(&self, plan: &LogicalPlan) -> Result<(Arc<StoredTable>, Vec<Step>)> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let Some(table) = (provider.as_ref() as &dyn Any).downcast_ref::<TableHandle>()
                else {
                    return Err(unsupported(&format!(
                        "joining \"{}\": a materialized view joins a stream with a table \
                         (CREATE TABLE), not with a plain view or function",
                        scan.table_name
                    )));
                };
                if !scan.filters.is_empty() {
                    return Err(crate::internal!("filters pushed into a table scan"));
                }
                let mut steps = Vec::new();
                if let Some(projection) = &scan.projection {
                    let full = table.schema();
                    let exprs = projection
                        .iter()
                        .map(|&i| column(full.field(i).name(), i))
                        .collect();
                    steps.push(Step::Projection {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
                Ok((table.0.clone(), steps))
            }
            LogicalPlan::SubqueryAlias(a) => self.visit_table(&a.input),
            LogicalPlan::Projection(p) => {
                let (table, mut steps) = self.visit_table(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                steps.push(Step::Projection {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                Ok((table, steps))
            }
            LogicalPlan::Filter(f) => {
                let (table, mut steps) = self.visit_table(&f.input)?;
                steps.push(Step::Filter {
                    predicate: self.physical(&f.predicate, f.input.schema())?,
                    schema: Arc::new(f.input.schema().as_arrow().clone()),
                });
                Ok((table, steps))
            }
            other => Err(unsupported(&format!(
                "{} on the table side of a join in a materialized view",
                super::node_name(other)
            ))),
        }
    }

    /// Equality keys compiled on each side, and their common types.
    #[allow(clippy::type_complexity)]
    fn join_keys(
        &self,
        join: &Join,
    ) -> Result<(
        Vec<Arc<dyn PhysicalExpr>>,
        Vec<Arc<dyn PhysicalExpr>>,
        Vec<DataType>,
    )> {
        if join.on.is_empty() {
            return Err(unsupported(
                "a join without an equality condition in a materialized view",
            ));
        }
        let (ls, rs) = (join.left.schema(), join.right.schema());
        let mut left = Vec::new();
        let mut right = Vec::new();
        let mut types = Vec::new();
        for (l, r) in &join.on {
            let lp = self.physical(l, ls)?;
            let rp = self.physical(r, rs)?;
            let lt = lp.data_type(ls.as_arrow())?;
            let rt = rp.data_type(rs.as_arrow())?;
            if lt != rt {
                return Err(unsupported(&format!(
                    "join keys of different types ({lt} and {rt}); cast one side"
                )));
            }
            left.push(lp);
            right.push(rp);
            types.push(lt);
        }
        Ok((left, right, types))
    }

    fn lookup_join(&self, join: &Join, stream_is_left: bool) -> Result<Part> {
        let keep_unmatched = match (join.join_type, stream_is_left) {
            (JoinType::Inner, _) => false,
            (JoinType::Left, true) | (JoinType::Right, false) => true,
            (t, _) => {
                return Err(unsupported(&format!(
                    "a {t} join of a stream with a table; a materialized view keeps every stream \
                     row (LEFT JOIN table) or only matches (JOIN)"
                )));
            }
        };
        if keep_unmatched && join.filter.is_some() {
            return Err(unsupported(
                "an outer join with a non-equality condition in a materialized view",
            ));
        }
        let (stream_plan, table_plan) = if stream_is_left {
            (&join.left, &join.right)
        } else {
            (&join.right, &join.left)
        };
        let mut part = self.visit(stream_plan)?;
        let (table, table_steps) = self.visit_table(table_plan)?;
        let (l, r, key_types) = self.join_keys(join)?;
        let (stream_keys, table_keys) = if stream_is_left { (l, r) } else { (r, l) };
        let schema = part.arrow_schema(&join.schema);
        part.steps.push(Step::LookupJoin {
            table,
            table_steps,
            table_keys,
            table_schema: Arc::new(table_plan.schema().as_arrow().clone()),
            stream_keys,
            key_types,
            stream_is_left,
            keep_unmatched,
            stream_width: stream_plan.schema().fields().len(),
            updating: part.updating,
            schema: schema.clone(),
        });
        if let Some(filter) = &join.filter {
            part.steps.push(Step::Filter {
                predicate: self.physical(filter, &join.schema)?,
                schema,
            });
        }
        Ok(part)
    }

    fn window_join(&self, join: &Join) -> Result<Part> {
        let keep_unmatched = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            t => {
                return Err(unsupported(&format!(
                    "a {t} join of two streams; JOIN and LEFT JOIN on the same window are supported"
                )));
            }
        };
        if keep_unmatched && join.filter.is_some() {
            return Err(unsupported(
                "an outer join with a non-equality condition in a materialized view",
            ));
        }
        let window_key = join.on.iter().position(|(l, r)| {
            matches!((l, r), (Expr::Column(a), Expr::Column(b)) if a.name == WINDOW_END && b.name == WINDOW_END)
        });
        let interval = match window_key {
            Some(_) => None,
            None => {
                let bound = join.filter.as_ref().and_then(|f| time_bound(f, join));
                let Some(bound) = bound else {
                    return Err(unsupported(
                        "a join of two streams needs the same window (window both with TUMBLE or HOP \
                         and join ON l.window_end = r.window_end) or a time bound between their event \
                         times (ON l.k = r.k AND r.ts BETWEEN l.ts - INTERVAL '1' MINUTE AND l.ts)",
                    ));
                };
                if keep_unmatched {
                    return Err(unsupported(
                        "an outer interval join of two streams; use JOIN",
                    ));
                }
                Some(bound)
            }
        };
        let (left_keys, right_keys, key_types) = self.join_keys(join)?;
        let mut merged = Part::default();
        let sides = [(&join.left, left_keys), (&join.right, right_keys)];
        let (lw, rw) = (
            join.left.schema().fields().len(),
            join.right.schema().fields().len(),
        );
        let mut fields = vec![Field::new("__side", DataType::UInt8, false)];
        for (i, t) in key_types.iter().enumerate() {
            fields.push(Field::new(format!("__k{i}"), t.clone(), true));
        }
        for (prefix, plan) in [("__l", &join.left), ("__r", &join.right)] {
            for (i, f) in plan.schema().fields().iter().enumerate() {
                fields.push(Field::new(
                    format!("{prefix}{i}"),
                    f.data_type().clone(),
                    true,
                ));
            }
        }
        let combined: SchemaRef = Arc::new(Schema::new(fields));
        for (side, (plan, keys)) in sides.into_iter().enumerate() {
            let part = self.visit(plan)?;
            if let Some(b) = &interval {
                let column = if side == 0 { &b.left } else { &b.right };
                check_event_time(&part, column)?;
            }
            if part.aggregate_at.is_some() || part.updating {
                return Err(unsupported(
                    "a join of two streams whose sides aggregate or update; make each side a \
                     windowed view and join the views on window_end",
                ));
            }
            let mut exprs: Vec<Arc<dyn PhysicalExpr>> =
                vec![Arc::new(Literal::new(ScalarValue::UInt8(Some(side as u8))))];
            exprs.extend(keys);
            for (own, plan) in [(side == 0, &join.left), (side == 1, &join.right)] {
                for (i, f) in plan.schema().fields().iter().enumerate() {
                    exprs.push(if own {
                        Arc::new(Column::new(f.name(), i))
                    } else {
                        Arc::new(Literal::new(ScalarValue::try_from(f.data_type())?))
                    });
                }
            }
            let mut steps = part.steps;
            steps.push(Step::Projection {
                exprs,
                schema: combined.clone(),
            });
            for mut input in part.inputs {
                input.steps.extend(steps.iter().cloned());
                merged.inputs.push(input);
            }
        }
        let filter = join
            .filter
            .as_ref()
            .map(|f| self.physical(f, &join.schema))
            .transpose()?;
        merged.aggregate_at = Some(0);
        let schema = Arc::new(join.schema.as_arrow().clone());
        let (Some(window_key), None) = (window_key, &interval) else {
            let (Some(b), Some(filter)) = (interval, filter) else {
                return Err(crate::internal!("an interval join without its bound"));
            };
            // Instances by the hash of every equality key.
            merged.key_exprs = (0..key_types.len())
                .map(|i| column(&format!("__k{i}"), 1 + i))
                .collect();
            merged.steps.push(Step::IntervalJoin {
                layout: IntervalLayout {
                    keys: key_types.len(),
                    left_width: lw,
                    right_width: rw,
                    left_time: join.left.schema().index_of_column(&b.left)?,
                    right_time: join.right.schema().index_of_column(&b.right)?,
                    lo: b.lo,
                    hi: b.hi,
                },
                key_types,
                filter,
                schema,
            });
            return Ok(merged);
        };
        // Instances by the hash of the keys other than the window (each
        // key's rows of both sides meet on one instance).
        let mut key_exprs: Vec<Arc<dyn PhysicalExpr>> = (0..key_types.len())
            .filter(|i| *i != window_key)
            .map(|i| column(&format!("__k{i}"), 1 + i))
            .collect();
        if key_exprs.is_empty() {
            key_exprs.push(column(&format!("__k{window_key}"), 1 + window_key));
        }
        merged.key_exprs = key_exprs;
        merged.steps.push(Step::WindowJoin {
            layout: CombinedLayout {
                keys: key_types.len(),
                window_key,
                left_width: lw,
                right_width: rw,
            },
            key_types,
            keep_unmatched,
            filter,
            schema,
        });
        Ok(merged)
    }
}

/// `lo <= right.ts - left.ts <= hi` (µs) read from a join condition.
struct TimeBound {
    left: datafusion::common::Column,
    right: datafusion::common::Column,
    lo: i64,
    hi: i64,
}

/// A column plus a constant interval, in µs.
fn column_offset(e: &Expr) -> Option<(datafusion::common::Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => column_offset(&c.expr),
        Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
            let (name, base) = column_offset(&b.left)?;
            let micros = interval_micros(&b.right)?;
            Some((
                name,
                if b.op == Operator::Plus {
                    base + micros
                } else {
                    base - micros
                },
            ))
        }
        _ => None,
    }
}

fn interval_micros(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000_000 + i.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000_000 + i.milliseconds as i64 * 1000)
        }
        _ => None,
    }
}

/// Finds both bounds of `right.ts - left.ts` in the conjuncts of `filter`.
fn time_bound(filter: &Expr, join: &Join) -> Option<TimeBound> {
    let mut comparisons: Vec<(Expr, Operator, Expr)> = Vec::new();
    for c in split_conjunction(filter) {
        match c {
            Expr::BinaryExpr(b) => comparisons.push(((*b.left).clone(), b.op, (*b.right).clone())),
            Expr::Between(b) if !b.negated => {
                comparisons.push(((*b.expr).clone(), Operator::GtEq, (*b.low).clone()));
                comparisons.push(((*b.expr).clone(), Operator::LtEq, (*b.high).clone()));
            }
            _ => {}
        }
    }
    let side = |c: &datafusion::common::Column| -> Option<bool> {
        let l = join.left.schema().index_of_column(c).is_ok();
        let r = join.right.schema().index_of_column(c).is_ok();
        match (l, r) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    };
    let (mut lo, mut hi): (Option<i64>, Option<i64>) = (None, None);
    let mut columns: Option<(datafusion::common::Column, datafusion::common::Column)> = None;
    for (a, op, b) in comparisons {
        let lower = match op {
            Operator::Lt | Operator::LtEq => true,
            Operator::Gt | Operator::GtEq => false,
            _ => continue,
        };
        let (Some((ca, oa)), Some((cb, ob))) = (column_offset(&a), column_offset(&b)) else {
            continue;
        };
        // a OP b with a = ca + oa, b = cb + ob.
        let (left, right, is_lower, value) = match (side(&ca), side(&cb)) {
            // l + oa < r + ob  <=>  r - l > oa - ob: a lower bound.
            (Some(true), Some(false)) => (ca, cb, lower, oa - ob),
            // r + oa < l + ob  <=>  r - l < ob - oa: an upper bound.
            (Some(false), Some(true)) => (cb, ca, !lower, ob - oa),
            _ => continue,
        };
        match &columns {
            Some((l, r)) if *l != left || *r != right => return None,
            _ => columns = Some((left, right)),
        }
        if is_lower {
            lo = Some(lo.map_or(value, |x: i64| x.max(value)));
        } else {
            hi = Some(hi.map_or(value, |x: i64| x.min(value)));
        }
    }
    let (left, right) = columns?;
    let (lo, hi) = (lo?, hi?);
    (lo <= hi).then_some(TimeBound {
        left,
        right,
        lo,
        hi,
    })
}

/// An interval join's bound must be on event-time columns: every input of
/// the side is a source whose WATERMARK column it is.
fn check_event_time(part: &Part, column: &datafusion::common::Column) -> Result<()> {
    let column = column.name.as_str();
    let ok = !part.inputs.is_empty()
        && part.inputs.iter().all(|i| match &i.input {
            Input::Source(s) => s
                .spec
                .event_time
                .as_ref()
                .is_some_and(|e| e.column == column),
            Input::View { .. } => false,
        });
    if ok {
        Ok(())
    } else {
        Err(unsupported(&format!(
            "an interval join's time bound must be on each source's event-time column (its \
             WATERMARK FOR column); \"{column}\" is not"
        )))
    }
}
