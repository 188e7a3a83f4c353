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

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;

use crate::connectors::{SourceRuntime, SourceTable};
use crate::error::{Error, Result};
use crate::operators::{
    AggregateCall, FilterOperator, ProjectionOperator, UnnestOperator, WindowAggregateOperator,
};
use crate::stream::Operator;

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
        })
    }
}

/// A view's query as operators over one source.
pub struct StreamPlan {
    pub source: Arc<SourceRuntime>,
    /// Stateless steps run where the source is read.
    pub pre: Vec<Step>,
    /// The keyed part, run by parallel instances over key groups.
    pub keyed: Option<KeyedPart>,
    /// The view's columns.
    pub schema: SchemaRef,
}

pub struct KeyedPart {
    /// Expressions over the output of `pre` whose hash picks the instance.
    /// Empty for a global window (one instance).
    pub key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The aggregate and everything after it.
    pub steps: Vec<Step>,
}

impl StreamPlan {
    /// Lines for EXPLAIN.
    pub fn describe(&self, parallelism: usize) -> Vec<String> {
        let mut lines = vec![format!(
            "Source: {} (connector {})",
            self.source.spec.name, self.source.spec.connector
        )];
        let describe = |s: &Step| match s.instantiate() {
            Ok(op) => op.name(),
            Err(e) => format!("<{e}>"),
        };
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
        lines.push("Materialize".into());
        lines
    }
}

/// Plans an optimized logical plan.
pub fn plan(logical: &LogicalPlan, state: &SessionState) -> Result<StreamPlan> {
    let mut walk = Walk {
        state,
        source: None,
        steps: Vec::new(),
        aggregate_at: None,
        key_exprs: Vec::new(),
    };
    walk.visit(logical)?;
    let source = walk.source.ok_or_else(|| {
        unsupported(
            "a materialized view must read a source (CREATE SOURCE); over tables only, use a view",
        )
    })?;
    let schema: SchemaRef = Arc::new(logical.schema().as_arrow().clone());
    let (pre, keyed) = match walk.aggregate_at {
        None => (walk.steps, None),
        Some(i) => {
            let mut pre = walk.steps;
            let steps = pre.split_off(i);
            (
                pre,
                Some(KeyedPart {
                    key_exprs: walk.key_exprs,
                    steps,
                }),
            )
        }
    };
    Ok(StreamPlan {
        source,
        pre,
        keyed,
        schema,
    })
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(what.to_string())
}

struct Walk<'a> {
    state: &'a SessionState,
    source: Option<Arc<SourceRuntime>>,
    steps: Vec<Step>,
    /// Index in `steps` of the window aggregate.
    aggregate_at: Option<usize>,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl Walk<'_> {
    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self.state.create_physical_expr(expr.clone(), schema)?)
    }

    fn visit(&mut self, plan: &LogicalPlan) -> Result<()> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let Some(source) = (provider.as_ref() as &dyn Any).downcast_ref::<SourceTable>()
                else {
                    return Err(unsupported(&format!(
                        "a materialized view can read only sources for now; \"{}\" is a table or view \
                         (joins of a source with a table come later)",
                        scan.table_name
                    )));
                };
                if self.source.is_some() {
                    return Err(unsupported(
                        "a materialized view over more than one source (joins, UNION) is not supported yet",
                    ));
                }
                if !scan.filters.is_empty() {
                    return Err(crate::internal!("filters pushed into a source scan"));
                }
                self.source = Some(source.runtime().clone());
                if let Some(projection) = &scan.projection {
                    let full = source.runtime().spec.schema.clone();
                    let exprs = projection
                        .iter()
                        .map(|&i| -> Arc<dyn PhysicalExpr> {
                            Arc::new(datafusion::physical_expr::expressions::Column::new(
                                full.field(i).name(),
                                i,
                            ))
                        })
                        .collect();
                    self.steps.push(Step::Projection {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
                Ok(())
            }
            LogicalPlan::SubqueryAlias(a) => self.visit(&a.input),
            LogicalPlan::Projection(p) => {
                self.visit(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                self.steps.push(Step::Projection {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                Ok(())
            }
            LogicalPlan::Filter(f) => {
                self.visit(&f.input)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                self.steps.push(Step::Filter {
                    predicate,
                    schema: Arc::new(f.input.schema().as_arrow().clone()),
                });
                Ok(())
            }
            LogicalPlan::Aggregate(agg) => {
                self.visit(&agg.input)?;
                if self.aggregate_at.is_some() {
                    return Err(unsupported(
                        "an aggregate over an aggregate in one materialized view is not supported yet; \
                         build a view on a view instead",
                    ));
                }
                let input = agg.input.schema();
                let window_end = agg
                    .group_expr
                    .iter()
                    .position(|e| matches!(e, Expr::Column(c) if c.name == WINDOW_END));
                let Some(window_end) = window_end else {
                    return Err(unsupported(
                        "GROUP BY over a source needs an event-time window: \
                         GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), ... (aggregates without a window \
                         are not supported yet)",
                    ));
                };
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
                let input_arrow: SchemaRef = Arc::new(input.as_arrow().clone());
                let mut aggregates = Vec::new();
                for e in &agg.aggr_expr {
                    #[allow(deprecated)] // the stable path until LoweredAggregateBuilder settles
                    let (function, filter, order_by) =
                        datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                            e,
                            input,
                            &input_arrow,
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
                self.key_exprs = agg
                    .group_expr
                    .iter()
                    .zip(&group_exprs)
                    .filter(|(e, _)| {
                        !matches!(e, Expr::Column(c) if c.name == WINDOW_END || c.name == WINDOW_START)
                    })
                    .map(|(_, p)| p.clone())
                    .collect();
                self.aggregate_at = Some(self.steps.len());
                self.steps.push(Step::WindowAggregate {
                    group_exprs,
                    window_end,
                    aggregates,
                    input_schema: input_arrow,
                    schema: Arc::new(agg.schema.as_arrow().clone()),
                });
                Ok(())
            }
            LogicalPlan::Unnest(u) => {
                self.visit(&u.input)?;
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
                self.steps.push(Step::Unnest {
                    list_column: *list_column,
                    sources: u.dependency_indices.clone(),
                    schema: Arc::new(u.schema.as_arrow().clone()),
                });
                Ok(())
            }
            LogicalPlan::Sort(_) => Err(unsupported(
                "ORDER BY in a materialized view is not supported: a view is a set of rows; \
                 order when you read it",
            )),
            LogicalPlan::Limit(_) => Err(unsupported(
                "LIMIT in a materialized view is not supported; limit when you read it",
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
