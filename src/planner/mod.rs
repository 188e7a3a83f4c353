//! The streaming planner: DataFusion's optimized logical plan of a view's
//! query becomes a [`StreamPlan`], a list of operator steps over one source.
//!
//! The walk accepts what runnel can run incrementally and refuses anything
//! else with 0A000 naming the part, so a view never silently answers
//! something other than its query. Windows reach this point as plain columns
//! (`window_start`, `window_end`, added by `sql::window`); an Aggregate
//! grouping by `window_end` is a window aggregate.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

use crate::connectors::{SourceRuntime, SourceTable};
use crate::error::{Error, Result};
use crate::operators::{
    AggregateCall, CombinedLayout, FilterOperator, IntervalJoinOperator, IntervalLayout,
    LookupJoinOperator, LookupTable, ProjectionOperator, SessionWindowOperator, UnnestOperator,
    UpdatingAggregateOperator, ViewContents, ViewTable, WindowAggregateOperator, WindowEmission,
    WindowJoinOperator,
};
use crate::stream::{Chain, Operator, changelog};

mod join;

/// The name the window rewrite gives a window's end.
pub const WINDOW_END: &str = "window_end";
/// The name the window rewrite gives a window's start.
pub const WINDOW_START: &str = "window_start";

/// One operator to build, as data: cheap to clone, so that each parallel
/// instance gets operators of its own.
#[derive(Clone)]
pub enum Step {
    Filter {
        predicate: Arc<dyn PhysicalExpr>,
        schema: SchemaRef,
    },
    Projection {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    Unnest {
        list_column: usize,
        sources: Vec<usize>,
        schema: SchemaRef,
    },
    WindowAggregate {
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        window_end: usize,
        aggregates: Vec<AggregateCall>,
        input_schema: SchemaRef,
        schema: SchemaRef,
    },
    /// A stream joined with a table's current rows.
    LookupJoin {
        table: Arc<crate::storage::StoredTable>,
        table_steps: Vec<Step>,
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        table_schema: SchemaRef,
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        stream_is_left: bool,
        keep_unmatched: bool,
        stream_width: usize,
        updating: bool,
        schema: SchemaRef,
    },
    /// Two streams joined on the same window, over combined batches.
    WindowJoin {
        layout: CombinedLayout,
        key_types: Vec<DataType>,
        keep_unmatched: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// Two streams joined with a time bound, over combined batches.
    IntervalJoin {
        layout: IntervalLayout,
        key_types: Vec<DataType>,
        filter: Arc<dyn PhysicalExpr>,
        schema: SchemaRef,
    },
    /// GROUP BY SESSION(ts, gap), keys.
    SessionWindow {
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        window_start: usize,
        window_end: usize,
        aggregates: Vec<AggregateCall>,
        input_schema: SchemaRef,
        schema: SchemaRef,
    },
    /// An aggregate that emits a changelog (docs/design/0005).
    UpdatingAggregate {
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateCall>,
        input_schema: SchemaRef,
        updating_input: bool,
        window: Option<WindowEmission>,
        /// Without the weight column.
        schema: SchemaRef,
    },
}

impl Step {
    pub fn instantiate(&self) -> Result<Box<dyn Operator>> {
        Ok(match self {
            Step::Filter { predicate, schema } => {
                Box::new(FilterOperator::new(predicate.clone(), schema.clone()))
            }
            Step::Projection { exprs, schema } => {
                Box::new(ProjectionOperator::new(exprs.clone(), schema.clone()))
            }
            Step::Unnest {
                list_column,
                sources,
                schema,
            } => Box::new(UnnestOperator::new(
                *list_column,
                sources.clone(),
                schema.clone(),
            )),
            Step::WindowAggregate {
                group_exprs,
                window_end,
                aggregates,
                input_schema,
                schema,
            } => Box::new(WindowAggregateOperator::try_new(
                group_exprs.clone(),
                *window_end,
                aggregates.clone(),
                input_schema,
                schema.clone(),
            )?),
            Step::LookupJoin {
                table,
                table_steps,
                table_keys,
                table_schema,
                stream_keys,
                key_types,
                stream_is_left,
                keep_unmatched,
                stream_width,
                updating,
                schema,
            } => Box::new(LookupJoinOperator::try_new(
                LookupTable {
                    table: table.clone(),
                    steps: Chain::new(
                        table_steps
                            .iter()
                            .map(Step::instantiate)
                            .collect::<Result<Vec<_>>>()?,
                    ),
                    keys: table_keys.clone(),
                    schema: table_schema.clone(),
                },
                stream_keys.clone(),
                key_types.clone(),
                *stream_is_left,
                *keep_unmatched,
                *stream_width,
                *updating,
                schema.clone(),
            )?),
            Step::IntervalJoin {
                layout,
                key_types,
                filter,
                schema,
            } => Box::new(IntervalJoinOperator::try_new(
                *layout,
                key_types.clone(),
                filter.clone(),
                schema.clone(),
            )?),
            Step::SessionWindow {
                group_exprs,
                window_start,
                window_end,
                aggregates,
                input_schema,
                schema,
            } => Box::new(SessionWindowOperator::try_new(
                group_exprs.clone(),
                *window_start,
                *window_end,
                aggregates.clone(),
                input_schema,
                schema.clone(),
            )?),
            Step::WindowJoin {
                layout,
                key_types,
                keep_unmatched,
                filter,
                schema,
            } => Box::new(WindowJoinOperator::try_new(
                *layout,
                key_types.clone(),
                *keep_unmatched,
                filter.clone(),
                schema.clone(),
            )?),
            Step::UpdatingAggregate {
                group_exprs,
                aggregates,
                input_schema,
                updating_input,
                window,
                schema,
            } => Box::new(UpdatingAggregateOperator::try_new(
                group_exprs.clone(),
                aggregates.clone(),
                input_schema,
                *updating_input,
                *window,
                schema.clone(),
            )?),
        })
    }
}

/// Where a view's rows come from.
#[derive(Clone)]
pub enum Input {
    Source(Arc<SourceRuntime>),
    /// Another materialized view: its snapshot, then its changes.
    View {
        name: String,
        contents: Arc<ViewContents>,
    },
}

impl Input {
    fn describe(&self) -> String {
        match self {
            Input::Source(s) => format!("Source: {} (connector {})", s.spec.name, s.spec.connector),
            Input::View { name, contents } => format!(
                "View: {name} ({})",
                if contents.is_updating() {
                    "updating"
                } else {
                    "append-only"
                }
            ),
        }
    }
}

/// One input and the stateless steps that run on its rows alone.
pub struct InputPlan {
    pub input: Input,
    pub steps: Vec<Step>,
}

/// What a view's rows mean and how they are emitted, from
/// `CREATE MATERIALIZED VIEW ... WITH (...)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// `emit = 'on_update'`.
    pub emit_on_update: bool,
    /// `allowed_lateness`, in µs.
    pub allowed_lateness: Option<i64>,
}

/// A view's query as operators over its inputs.
pub struct StreamPlan {
    /// Each input with its own stateless steps; their rows are merged (UNION
    /// ALL) with the minimum watermark.
    pub inputs: Vec<InputPlan>,
    /// Stateless steps after the merge, run where the inputs are read.
    pub pre: Vec<Step>,
    /// The keyed part, run by parallel instances over key groups.
    pub keyed: Option<KeyedPart>,
    /// The view's columns (without the weight column).
    pub schema: SchemaRef,
    /// The view's rows change after they appear: its edges carry weights.
    pub updating: bool,
}

pub struct KeyedPart {
    /// Expressions over the output of `pre` whose hash picks the instance.
    /// Empty for a global aggregate (one instance).
    pub key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The aggregate and everything after it.
    pub steps: Vec<Step>,
}

impl StreamPlan {
    /// Lines for EXPLAIN.
    pub fn describe(&self, parallelism: usize) -> Vec<String> {
        let describe = |s: &Step| match s.instantiate() {
            Ok(op) => op.name(),
            Err(e) => format!("<{e}>"),
        };
        let mut lines = Vec::new();
        let many = self.inputs.len() > 1;
        for (i, input) in self.inputs.iter().enumerate() {
            let prefix = if many {
                format!("Input {}: ", i + 1)
            } else {
                String::new()
            };
            lines.push(format!("{prefix}{}", input.input.describe()));
            lines.extend(
                input
                    .steps
                    .iter()
                    .map(|s| format!("{prefix}{}", describe(s))),
            );
        }
        if many {
            lines.push(format!(
                "Union: {} inputs, minimum watermark",
                self.inputs.len()
            ));
        }
        lines.extend(self.pre.iter().map(describe));
        if let Some(k) = &self.keyed {
            let keys: Vec<String> = k.key_exprs.iter().map(|e| e.to_string()).collect();
            lines.push(format!(
                "Exchange: hash [{}] into 128 key groups over {} instances",
                keys.join(", "),
                if keys.is_empty() { 1 } else { parallelism }
            ));
            lines.extend(k.steps.iter().map(describe));
        }
        lines.push(if self.updating {
            "Materialize: updating (rows are inserted and deleted)".into()
        } else {
            "Materialize: append-only".into()
        });
        lines
    }
}

/// Plans an optimized logical plan.
pub fn plan(
    logical: &LogicalPlan,
    state: &SessionState,
    options: ViewOptions,
) -> Result<StreamPlan> {
    let walk = Walk { state, options };
    let part = walk.visit(logical)?;
    if part.inputs.is_empty() {
        return Err(unsupported(
            "a materialized view must read a source (CREATE SOURCE) or another materialized view; \
             over tables only, use a view",
        ));
    }
    if !part.windowed && options != ViewOptions::default() {
        return Err(Error::Plan {
            sqlstate: "22023",
            message: "emit and allowed_lateness apply only to a view that aggregates over an \
                      event-time window (GROUP BY TUMBLE/HOP ...)"
                .into(),
        });
    }
    if part.session {
        return Err(unsupported(
            "SESSION windows must be aggregated: GROUP BY SESSION(ts, gap), key",
        ));
    }
    let schema: SchemaRef = Arc::new(logical.schema().as_arrow().clone());
    let (pre, keyed) = match part.aggregate_at {
        None => (part.steps, None),
        Some(i) => {
            let mut pre = part.steps;
            let steps = pre.split_off(i);
            (
                pre,
                Some(KeyedPart {
                    key_exprs: part.key_exprs,
                    steps,
                }),
            )
        }
    };
    Ok(StreamPlan {
        inputs: part.inputs,
        pre,
        keyed,
        schema,
        updating: part.updating,
    })
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(what.to_string())
}

struct Walk<'a> {
    state: &'a SessionState,
    options: ViewOptions,
}

/// The plan below some node.
#[derive(Default)]
struct Part {
    inputs: Vec<InputPlan>,
    /// Steps after the inputs are merged.
    steps: Vec<Step>,
    /// Rows carry weights from here on.
    updating: bool,
    /// Index in `steps` of the aggregate.
    aggregate_at: Option<usize>,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    windowed: bool,
    /// Rows carry proto-sessions (`window_end = session_end(ts, gap)`)
    /// that an aggregate must merge.
    session: bool,
}

impl Part {
    /// The Arrow schema of rows at this point, with the weight column when
    /// they carry one.
    fn arrow_schema(&self, schema: &DFSchema) -> SchemaRef {
        let plain = schema.as_arrow();
        if self.updating {
            changelog::with_weight(plain)
        } else {
            Arc::new(plain.clone())
        }
    }

    /// A projection that passes the weight through after `exprs`.
    fn project(
        &mut self,
        mut exprs: Vec<Arc<dyn PhysicalExpr>>,
        input: &DFSchema,
        output: &DFSchema,
    ) {
        if self.updating {
            exprs.push(Arc::new(
                datafusion::physical_expr::expressions::Column::new(
                    changelog::WEIGHT_COLUMN,
                    input.fields().len(),
                ),
            ));
        }
        let schema = self.arrow_schema(output);
        self.steps.push(Step::Projection { exprs, schema });
    }
}

/// Whether `expr` computes a proto-session (the SESSION rewrite).
pub(crate) fn calls_session_end(expr: &Expr) -> bool {
    use datafusion::common::tree_node::TreeNode;
    expr.exists(|e| {
        Ok(matches!(e, Expr::ScalarFunction(f)
            if f.func.name() == crate::database::session::SESSION_END))
    })
    .unwrap_or(false)
}

fn column(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(datafusion::physical_expr::expressions::Column::new(
        name, index,
    ))
}

impl Walk<'_> {
    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self.state.create_physical_expr(expr.clone(), schema)?)
    }

    fn visit(&self, plan: &LogicalPlan) -> Result<Part> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let any = provider.as_ref() as &dyn Any;
                let (input, full, updating) = if let Some(source) =
                    any.downcast_ref::<SourceTable>()
                {
                    let rt = source.runtime().clone();
                    let full = rt.spec.schema.clone();
                    (Input::Source(rt), full, false)
                } else if let Some(view) = any.downcast_ref::<ViewTable>() {
                    let contents = view.contents().clone();
                    let full = contents.schema().clone();
                    let updating = contents.is_updating();
                    let name = scan.table_name.table().to_string();
                    (Input::View { name, contents }, full, updating)
                } else {
                    return Err(unsupported(&format!(
                        "a materialized view reads sources and other materialized views; it reads \
                         table \"{}\" here (directly or through a plain view). Join a table with \
                         a stream (FROM source JOIN table ON ...), or use a plain view over tables",
                        scan.table_name
                    )));
                };
                if !scan.filters.is_empty() {
                    return Err(crate::internal!("filters pushed into a streaming scan"));
                }
                let mut steps = Vec::new();
                if let Some(projection) = &scan.projection {
                    let mut exprs: Vec<_> = projection
                        .iter()
                        .map(|&i| column(full.field(i).name(), i))
                        .collect();
                    let plain = scan.projected_schema.as_arrow();
                    let schema = if updating {
                        exprs.push(column(changelog::WEIGHT_COLUMN, full.fields().len()));
                        changelog::with_weight(plain)
                    } else {
                        Arc::new(plain.clone())
                    };
                    steps.push(Step::Projection { exprs, schema });
                }
                Ok(Part {
                    inputs: vec![InputPlan { input, steps }],
                    updating,
                    ..Default::default()
                })
            }
            LogicalPlan::SubqueryAlias(a) => self.visit(&a.input),
            LogicalPlan::Projection(p) => {
                let mut part = self.visit(&p.input)?;
                part.session |= p.expr.iter().any(calls_session_end);
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                part.project(exprs, p.input.schema(), &p.schema);
                Ok(part)
            }
            LogicalPlan::Filter(f) => {
                let mut part = self.visit(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                let schema = part.arrow_schema(f.input.schema());
                part.steps.push(Step::Filter { predicate, schema });
                Ok(part)
            }
            LogicalPlan::Union(u) => {
                let parts = u
                    .inputs
                    .iter()
                    .map(|i| self.visit(i))
                    .collect::<Result<Vec<_>>>()?;
                let updating = parts.iter().any(|p| p.updating);
                let mut merged = Part {
                    updating,
                    ..Default::default()
                };
                for (part, input) in parts.into_iter().zip(&u.inputs) {
                    if part.aggregate_at.is_some() {
                        return Err(unsupported(
                            "UNION ALL of aggregates in one materialized view; \
                             make each aggregate a view and union the views",
                        ));
                    }
                    // Each branch ends in the union's schema (names and
                    // nullability), weighted if any branch is.
                    let width = input.schema().fields().len();
                    let mut steps = part.steps;
                    let mut exprs: Vec<_> = (0..width)
                        .map(|i| column(input.schema().field(i).name(), i))
                        .collect();
                    if updating {
                        exprs.push(if part.updating {
                            column(changelog::WEIGHT_COLUMN, width)
                        } else {
                            Arc::new(datafusion::physical_expr::expressions::Literal::new(
                                datafusion::scalar::ScalarValue::Int64(Some(1)),
                            ))
                        });
                    }
                    steps.push(Step::Projection {
                        exprs,
                        schema: merged.arrow_schema(&u.schema),
                    });
                    for mut i in part.inputs {
                        i.steps.extend(steps.iter().cloned());
                        merged.inputs.push(i);
                    }
                }
                Ok(merged)
            }
            LogicalPlan::Aggregate(agg) => {
                let mut part = self.visit(&agg.input)?;
                if part.aggregate_at.is_some() {
                    return Err(unsupported(
                        "an aggregate over an aggregate in one materialized view is not supported; \
                         build a view on a view instead",
                    ));
                }
                let input = agg.input.schema();
                let window_end = agg
                    .group_expr
                    .iter()
                    .position(|e| matches!(e, Expr::Column(c) if c.name == WINDOW_END));
                let group_exprs = agg
                    .group_expr
                    .iter()
                    .map(|e| match e {
                        Expr::GroupingSet(_) => Err(unsupported(
                            "GROUPING SETS, CUBE and ROLLUP are not supported in materialized views",
                        )),
                        e => self.physical(e, input),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let input_arrow = part.arrow_schema(input);
                let mut aggregates = Vec::new();
                for e in &agg.aggr_expr {
                    #[allow(deprecated)] // the stable path until LoweredAggregateBuilder settles
                    let (function, filter, order_by) =
                        datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                            e,
                            input,
                            input.as_arrow(),
                            self.state.execution_props(),
                        )?;
                    if !order_by.is_empty() {
                        return Err(unsupported(
                            "aggregates with ORDER BY inside the call are not supported in materialized views",
                        ));
                    }
                    aggregates.push(AggregateCall { function, filter });
                }
                // Rows go to instances by the hash of the non-window keys, so
                // each key's windows live on exactly one instance.
                part.key_exprs = agg
                    .group_expr
                    .iter()
                    .zip(&group_exprs)
                    .filter(|(e, _)| {
                        !matches!(e, Expr::Column(c) if c.name == WINDOW_END || c.name == WINDOW_START)
                    })
                    .map(|(_, p)| p.clone())
                    .collect();
                part.aggregate_at = Some(part.steps.len());
                part.windowed = window_end.is_some();
                let schema: SchemaRef = Arc::new(agg.schema.as_arrow().clone());
                if part.session {
                    let window_start = agg
                        .group_expr
                        .iter()
                        .position(|e| matches!(e, Expr::Column(c) if c.name == WINDOW_START));
                    let (Some(window_start), Some(window_end)) = (window_start, window_end) else {
                        return Err(unsupported(
                            "a SESSION window must be grouped by both window_start and window_end \
                             (GROUP BY SESSION(ts, gap), ... adds both)",
                        ));
                    };
                    if part.updating || self.options != ViewOptions::default() {
                        return Err(unsupported(
                            "SESSION windows over an updating input or with emit/allowed_lateness options",
                        ));
                    }
                    part.session = false;
                    part.steps.push(Step::SessionWindow {
                        group_exprs,
                        window_start,
                        window_end,
                        aggregates,
                        input_schema: input_arrow,
                        schema,
                    });
                    return Ok(part);
                }
                let append_only_window = window_end.is_some()
                    && !part.updating
                    && self.options == ViewOptions::default();
                match window_end {
                    Some(window_end) if append_only_window => {
                        part.steps.push(Step::WindowAggregate {
                            group_exprs,
                            window_end,
                            aggregates,
                            input_schema: input_arrow,
                            schema,
                        });
                    }
                    _ => {
                        let window = window_end.map(|window_end| WindowEmission {
                            window_end,
                            on_update: self.options.emit_on_update,
                            allowed_lateness: self.options.allowed_lateness.unwrap_or(0),
                        });
                        part.steps.push(Step::UpdatingAggregate {
                            group_exprs,
                            aggregates,
                            input_schema: input_arrow,
                            updating_input: part.updating,
                            window,
                            schema,
                        });
                        part.updating = true;
                    }
                }
                Ok(part)
            }
            LogicalPlan::Unnest(u) => {
                let mut part = self.visit(&u.input)?;
                let [(list_column, list)] = u.list_type_columns.as_slice() else {
                    return Err(unsupported(
                        "UNNEST of several columns in a materialized view",
                    ));
                };
                if list.depth != 1 || !u.struct_type_columns.is_empty() {
                    return Err(unsupported(
                        "UNNEST of nested lists or structs in a materialized view",
                    ));
                }
                let mut sources = u.dependency_indices.clone();
                if part.updating {
                    sources.push(u.input.schema().fields().len());
                }
                let schema = part.arrow_schema(&u.schema);
                part.steps.push(Step::Unnest {
                    list_column: *list_column,
                    sources,
                    schema,
                });
                Ok(part)
            }
            LogicalPlan::Sort(_) => Err(unsupported(
                "ORDER BY in a materialized view is not supported: a view is a set of rows; \
                 order when you read it",
            )),
            LogicalPlan::Limit(_) => Err(unsupported(
                "LIMIT in a materialized view is not supported; limit when you read it",
            )),
            LogicalPlan::Join(j) => self.visit_join(j),
            LogicalPlan::Distinct(_) => Err(unsupported(
                "SELECT DISTINCT in a materialized view is not supported yet; use GROUP BY",
            )),
            other => Err(unsupported(&format!(
                "{} is not supported in a materialized view yet",
                node_name(other)
            ))),
        }
    }
}

fn node_name(plan: &LogicalPlan) -> String {
    let display = plan.display().to_string();
    display
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
        .unwrap_or("this query")
        .to_string()
}
