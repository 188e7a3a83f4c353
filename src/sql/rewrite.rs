//! PostgreSQL behaviours DataFusion's SQL front end lacks, applied to the AST
//! after parsing (next to datafusion-pg-catalog's own rewrites):
//!
//! - result column names: PostgreSQL names an unaliased `count(*)` column
//!   `count`, `x::int` `x`, and other expressions `?column?`; DataFusion
//!   would say `count(*)`, `CAST(x AS Int32)`, `Int64(1)`.
//! - `ARRAY(subquery)`, which psql's `\d+` sends, becomes an `array_agg`
//!   over the subquery, or a map over an array when the subquery reads
//!   `unnest(array)` or `pg_options_to_table(options)` (psql's `\d` of a
//!   foreign table).
//! - In catalog queries only ([`name_foreign_kinds`]): psql's
//!   `CASE c.relkind ... WHEN 'f' THEN 'foreign table'` names runnel's
//!   foreign relations by their kind (`source`, `sink`).
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
            && let Some(mapped) = transform_options(query)
        {
            *expr = mapped;
            self.0 = true;
        } else if let Expr::Function(f) = expr
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
    let (body, relation) = single_column_select(query)?;
    let mut relation = relation.clone();
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
    array_transform(array.clone(), param, body)
}

/// `SELECT expr FROM relation` and nothing more (no WHERE, GROUP BY
/// filters, joins, DISTINCT, ORDER BY or LIMIT): the one expression and the
/// relation, the shape both ARRAY(subquery) rewrites turn into a map.
fn single_column_select(query: &Query) -> Option<(Expr, &TableFactor)> {
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
    Some((body, &select.from[0].relation))
}

/// `array_transform(array, param -> body)`. Built as an AST: the PostgreSQL
/// dialect would read `param -> body` as the JSON operator.
fn array_transform(array: Expr, param: Ident, body: Expr) -> Option<Expr> {
    let mut call = parse_expr("array_transform(a, b)")?;
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
            FunctionArg::Unnamed(FunctionArgExpr::Expr(array)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(lambda)),
        ];
        return Some(call);
    }
    None
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `ARRAY(SELECT e(option_name, option_value) FROM pg_options_to_table(o))`
/// is a map over the `name=value` strings of `o`:
/// `array_transform(o, opt -> e(name of opt, value of opt))`, where, as in
/// PostgreSQL, the name is the text before the first `=` and the value the
/// text after it (NULL without one). A correlated table function is out of
/// DataFusion's reach; this needs no decorrelation.
fn transform_options(query: &Query) -> Option<Expr> {
    let (mut body, relation) = single_column_select(query)?;
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = relation
    else {
        return None;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().to_lowercase())
        .collect();
    let is_options = matches!(parts.as_slice(), [f] | [_, f] if f == "pg_options_to_table")
        && (parts.len() == 1 || parts[0] == "pg_catalog");
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(options))] = args.args.as_slice() else {
        return None;
    };
    if !is_options || alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    const PARAM: &str = "runnel_option";
    let mut columns = OptionColumns {
        qualifier: alias.as_ref().map(|a| a.name.value.to_lowercase()),
        name: parse_expr(&format!("split_part({PARAM}, '=', 1)"))?,
        value: parse_expr(&format!(
            "CASE WHEN strpos({PARAM}, '=') = 0 THEN NULL ELSE substr({PARAM}, strpos({PARAM}, '=') + 1) END"
        ))?,
    };
    let _ = body.visit(&mut columns);
    array_transform(options.clone(), Ident::new(PARAM), body)
}

/// Replaces the columns of `pg_options_to_table` with expressions.
struct OptionColumns {
    /// The table function's alias, if it has one.
    qualifier: Option<String>,
    name: Expr,
    value: Expr,
}

impl VisitorMut for OptionColumns {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let column = match expr {
            Expr::Identifier(i) => Some(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] if Some(q.value.to_lowercase()) == self.qualifier => {
                    Some(c.value.to_lowercase())
                }
                _ => None,
            },
            _ => None,
        };
        match column.as_deref() {
            Some("option_name") => *expr = self.name.clone(),
            Some("option_value") => *expr = self.value.clone(),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// In psql's `CASE c.relkind ... WHEN 'f' THEN 'foreign table' ...`, the
/// `'f'` result becomes `runnel_foreign_kind(c.oid)`: runnel's sources and
/// sinks are relkind 'f' (src/catalog/pg_catalog.rs explains why), and this
/// names each by its kind in `\d`. Returns true when anything changed. Only
/// for catalog queries.
pub fn name_foreign_kinds(statement: &mut Statement) -> bool {
    let mut kinds = ForeignKinds(false);
    let _ = statement.visit(&mut kinds);
    kinds.0
}

struct ForeignKinds(bool);

impl VisitorMut for ForeignKinds {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Case {
            operand: Some(operand),
            conditions,
            ..
        } = expr
        else {
            return ControlFlow::Continue(());
        };
        let oid = match operand.as_ref() {
            Expr::Identifier(i) if i.value.eq_ignore_ascii_case("relkind") => {
                Expr::Identifier(Ident::new("oid"))
            }
            Expr::CompoundIdentifier(parts)
                if parts.len() == 2 && parts[1].value.eq_ignore_ascii_case("relkind") =>
            {
                Expr::CompoundIdentifier(vec![parts[0].clone(), Ident::new("oid")])
            }
            _ => return ControlFlow::Continue(()),
        };
        for when in conditions.iter_mut() {
            if is_string(&when.condition, "f") && is_string(&when.result, "foreign table") {
                let Some(mut call) = parse_expr("runnel_foreign_kind(oid)") else {
                    continue;
                };
                if let Expr::Function(f) = &mut call
                    && let FunctionArguments::List(list) = &mut f.args
                {
                    list.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(oid.clone()))];
                    when.result = call;
                    self.0 = true;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

fn is_string(expr: &Expr, wanted: &str) -> bool {
    use datafusion::sql::sqlparser::ast::Value;
    match expr {
        Expr::Value(v) => matches!(&v.value, Value::SingleQuotedString(s) if s == wanted),
        _ => false,
    }
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
    fn options_to_table_becomes_a_map() {
        assert_eq!(
            rewritten(
                "SELECT array_to_string(ARRAY(SELECT quote_ident(option_name) || ' ' || \
                 quote_literal(option_value) FROM pg_catalog.pg_options_to_table(ftoptions)), ', ') \
                 FROM pg_foreign_table"
            ),
            "SELECT array_to_string(array_transform(ftoptions, runnel_option -> \
             quote_ident(split_part(runnel_option, '=', 1)) || ' ' || \
             quote_literal(CASE WHEN strpos(runnel_option, '=') = 0 THEN NULL \
             ELSE SUBSTR(runnel_option, strpos(runnel_option, '=') + 1) END)), ', ') \
             AS \"array_to_string\" FROM pg_foreign_table"
        );
        // Anything else read from the function keeps the general rewrite.
        assert!(
            rewritten("SELECT ARRAY(SELECT option_name FROM pg_options_to_table(o) WHERE true)")
                .contains("array_agg(option_name)")
        );
    }

    #[test]
    fn psql_relkind_case_names_foreign_kinds() {
        let mut s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'f' THEN 'foreign table' END, \
             CASE relkind WHEN 'f' THEN 'foreign table' END, \
             CASE c.relkind WHEN 'f' THEN 'other' END FROM pg_class c",
        )
        .unwrap()
        .remove(0);
        assert!(name_foreign_kinds(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'f' THEN runnel_foreign_kind(c.oid) END, \
             CASE relkind WHEN 'f' THEN runnel_foreign_kind(oid) END, \
             CASE c.relkind WHEN 'f' THEN 'other' END FROM pg_class c"
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
