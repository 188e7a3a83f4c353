//! PostgreSQL behaviours DataFusion's SQL front end lacks, applied to the AST
//! after parsing (next to datafusion-pg-catalog's own rewrites):
//!
//! - result column names: PostgreSQL names an unaliased `count(*)` column
//!   `count`, `x::int` `x`, and other expressions `?column?`; DataFusion
//!   would say `count(*)`, `CAST(x AS Int32)`, `Int64(1)`.
//! - `ARRAY(subquery)`, which psql's `\d+` sends, becomes an `array_agg`
//!   over the subquery.
//!
//! Rewrites only touch the AST; they never look at SQL text.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, LambdaFunction,
    LambdaFunctionParameter, LambdaSyntax, OneOrManyWithParens, Query, SelectItem, SetExpr,
    Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Applies every rewrite to a query statement. Returns true when an
/// `ARRAY(subquery)` was rewritten, so that the compatibility rules (which
/// handle subqueries DataFusion cannot decorrelate) run over the result.
pub fn rewrite_query(statement: &mut Statement) -> bool {
    let mut arrays = ArraySubquery(false);
    let _ = statement.visit(&mut arrays);
    if let Statement::Query(query) = statement {
        name_columns(query);
    }
    arrays.0
}

/// Gives the outermost SELECT's unaliased expressions PostgreSQL's names,
/// unless that would repeat a name already in the list.
fn name_columns(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let mut used: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.to_lowercase()),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last().map(|i| i.value.to_lowercase())
            }
            _ => None,
        })
        .collect();
    for item in select.projection.iter_mut() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        let Some(name) = postgres_name(expr) else {
            continue;
        };
        if !used.insert(name.clone()) {
            continue;
        }
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', name),
        };
    }
}

/// The column name PostgreSQL gives an unaliased expression; `None` when
/// DataFusion already agrees (plain column references).
fn postgres_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Identifier(i) => Some(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
            inner @ Expr::Function(_) => postgres_name(inner),
            _ => Some(data_type.to_string().to_lowercase()),
        },
        Expr::Nested(inner) => postgres_name(inner),
        Expr::TypedString(t) => Some(t.data_type.to_string().to_lowercase()),
        _ => Some("?column?".to_string()),
    }
}

/// Moves subqueries out of `CASE WHEN c THEN (subquery) END` (see
/// [`hoist_case_subquery`]); returns true when anything moved. Used on
/// catalog queries, whose compatibility rules only handle subqueries that
/// stand directly in the select list.
pub fn hoist_case_subqueries(statement: &mut Statement) -> bool {
    let mut hoist = HoistCase(false);
    let _ = statement.visit(&mut hoist);
    hoist.0
}

struct HoistCase(bool);

impl VisitorMut for HoistCase {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(hoisted) = hoist_case_subquery(expr) {
            *expr = hoisted;
            self.0 = true;
        }
        ControlFlow::Continue(())
    }
}

/// `CASE WHEN c THEN (SELECT v FROM .. WHERE p) [ELSE NULL] END` is
/// `(SELECT v FROM .. WHERE (c) AND (p))`: when `c` is false there is no
/// row, which gives the same NULL.
fn hoist_case_subquery(expr: &Expr) -> Option<Expr> {
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = expr
    else {
        return None;
    };
    let else_is_null = match else_result.as_deref() {
        None => true,
        Some(Expr::Value(v)) => matches!(v.value, datafusion::sql::sqlparser::ast::Value::Null),
        Some(_) => false,
    };
    let [when] = conditions.as_slice() else {
        return None;
    };
    let Expr::Subquery(query) = &when.result else {
        return None;
    };
    if !else_is_null || query.limit_clause.is_some() {
        return None;
    }
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let condition = Expr::Nested(Box::new(when.condition.clone()));
    select.selection = Some(match select.selection.take() {
        Some(p) => Expr::BinaryOp {
            left: Box::new(condition),
            op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
            right: Box::new(Expr::Nested(Box::new(p))),
        },
        None => condition,
    });
    Some(Expr::Subquery(query))
}

/// `ARRAY(SELECT e FROM ...)` → `(SELECT array_agg(e) FROM ...)`: the
/// aggregate moves into the subquery so that references to outer columns
/// stay in scope.
struct ArraySubquery(bool);

impl VisitorMut for ArraySubquery {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("array")
            && let FunctionArguments::Subquery(query) = &f.args
            && let Some(mapped) = transform_unnest(query)
        {
            *expr = mapped;
            self.0 = true;
        } else if let Expr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("array")
            && let FunctionArguments::Subquery(query) = &f.args
            && let Some(rewritten) = aggregate_subquery(query)
        {
            *expr = Expr::Subquery(Box::new(rewritten));
            self.0 = true;
        }
        ControlFlow::Continue(())
    }
}

/// `ARRAY(SELECT e(x) FROM unnest(arr) x)` is a map over `arr`:
/// `array_transform(arr, x -> e(x))`, which needs no decorrelation.
fn transform_unnest(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if query.order_by.is_some()
        || query.limit_clause.is_some()
        || select.selection.is_some()
        || select.having.is_some()
        || select.from.len() != 1
        || !select.from[0].joins.is_empty()
        || select.projection.len() != 1
        || select.distinct.is_some()
    {
        return None;
    }
    let body = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
        _ => return None,
    };
    let mut relation = select.from[0].relation.clone();
    strip_pg_catalog(&mut relation);
    let TableFactor::UNNEST {
        alias: Some(alias),
        array_exprs,
        with_offset: false,
        with_ordinality: false,
        ..
    } = relation
    else {
        return None;
    };
    let [array] = array_exprs.as_slice() else {
        return None;
    };
    let param = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [column] => column.name.clone(),
        _ => return None,
    };
    let mut call = Parser::new(&PostgreSqlDialect {})
        .try_with_sql("array_transform(a, b)")
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    if let Expr::Function(f) = &mut call
        && let FunctionArguments::List(list) = &mut f.args
    {
        let lambda = Expr::Lambda(LambdaFunction {
            params: OneOrManyWithParens::One(LambdaFunctionParameter {
                name: param,
                data_type: None,
            }),
            body: Box::new(body),
            syntax: LambdaSyntax::Arrow,
        });
        list.args = vec![
            FunctionArg::Unnamed(FunctionArgExpr::Expr(array.clone())),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(lambda)),
        ];
        return Some(call);
    }
    None
}

fn aggregate_subquery(query: &Query) -> Option<Query> {
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if select.projection.len() != 1 {
        return None;
    }
    let inner = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
        _ => return None,
    };
    let aggregate = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("array_agg({inner})"))
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    select.projection = vec![SelectItem::UnnamedExpr(aggregate)];
    for table in select.from.iter_mut() {
        strip_pg_catalog(&mut table.relation);
    }
    Some(query)
}

/// `[pg_catalog.]unnest(array) AS x` in FROM is DataFusion's UNNEST relation.
fn strip_pg_catalog(relation: &mut TableFactor) {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = relation
    else {
        return;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().to_lowercase())
        .collect();
    let is_unnest = matches!(parts.as_slice(), [f] | [_, f] if f == "unnest")
        && (parts.len() == 1 || parts[0] == "pg_catalog");
    if !is_unnest {
        return;
    }
    let array_exprs = args
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect::<Vec<_>>();
    if array_exprs.len() != args.args.len() {
        return;
    }
    *relation = TableFactor::UNNEST {
        alias: alias.take(),
        array_exprs,
        with_offset: false,
        with_offset_alias: None,
        with_ordinality: false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite_query(&mut s);
        s.to_string()
    }

    #[test]
    fn names_columns_like_postgres() {
        assert_eq!(
            rewritten("SELECT a, count(*), x::int, 'a'::text, 1, count(b) FROM t"),
            "SELECT a, count(*) AS \"count\", x::INT AS \"x\", 'a'::TEXT AS \"text\", 1 AS \"?column?\", count(b) FROM t"
        );
    }

    #[test]
    fn case_around_a_subquery_moves_into_it() {
        let mut s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT CASE WHEN t.c THEN (SELECT b FROM u WHERE u.a = t.a) ELSE NULL END AS x FROM t",
        )
        .unwrap()
        .remove(0);
        assert!(hoist_case_subqueries(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT (SELECT b FROM u WHERE (t.c) AND (u.a = t.a)) AS x FROM t"
        );
    }

    #[test]
    fn array_subquery_becomes_array_agg() {
        assert_eq!(
            rewritten("SELECT array(select a from t where b) AS a"),
            "SELECT (SELECT array_agg(a) FROM t WHERE b) AS a"
        );
        assert_eq!(
            rewritten("SELECT array(select 'a' || x from pg_catalog.unnest(t.o) x) AS a FROM t"),
            "SELECT array_transform(t.o, x -> 'a' || x) AS a FROM t"
        );
    }
}
