//! Window syntax from other systems, normalized into one form before
//! DataFusion plans the query.
//!
//! All of these become the same derived table that adds `window_start` and
//! `window_end` columns to the relation, grouped by both:
//!
//! - `... FROM readings GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), k`
//! - RisingWave: `FROM TUMBLE(readings, ts, INTERVAL '5' SECOND) GROUP BY window_start, k`
//! - Flink: `FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECOND))`
//!
//! A tumbling window is `date_bin(size, ts)` (aligned to the Unix epoch), so
//! a streaming answer equals DataFusion's batch answer over the same rows.
//! A hopping window `HOP(ts, slide, size)` unnests `hop_starts(ts, slide,
//! size)`, the starts (multiples of `slide`) of every window containing ts.
//! The window size may also be a short literal such as `'5s'`.

use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SetExpr, TableFactor,
    Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;

use crate::error::{Error, Result};

/// Rewrites the window forms in `query` (its outermost SELECT and nested
/// queries in FROM). Returns true when a window was found.
pub fn rewrite_windows(query: &mut ast::Query) -> Result<bool> {
    rewrite_set_expr(&mut query.body)
}

fn rewrite_set_expr(body: &mut SetExpr) -> Result<bool> {
    match body {
        SetExpr::Select(select) => rewrite_select(select),
        SetExpr::Query(q) => rewrite_windows(q),
        SetExpr::SetOperation { left, right, .. } => {
            let l = rewrite_set_expr(left)?;
            let r = rewrite_set_expr(right)?;
            Ok(l || r)
        }
        _ => Ok(false),
    }
}

/// A window call: kind, time column, and the interval arguments as SQL.
struct WindowCall {
    kind: String,
    time: String,
    intervals: Vec<String>,
}

fn rewrite_select(select: &mut ast::Select) -> Result<bool> {
    let mut found = false;
    for table in &mut select.from {
        found |= rewrite_factor(&mut table.relation)?;
        for join in &mut table.joins {
            found |= rewrite_factor(&mut join.relation)?;
        }
    }
    // GROUP BY TUMBLE(ts, size): the window wraps the one relation.
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(found);
    };
    let Some(position) = exprs
        .iter()
        .position(|e| window_call_in_group_by(e).is_some())
    else {
        return Ok(found);
    };
    let call = window_call_in_group_by(&exprs[position]).expect("checked above")?;
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(Error::Unsupported(
            "GROUP BY TUMBLE/HOP needs exactly one relation in FROM; window each input first \
             (FROM TUMBLE(t, ts, size))"
                .into(),
        ));
    }
    let relation = &mut select.from[0].relation;
    let (source_sql, alias) = relation_sql(relation)?;
    *relation = windowed_relation(&call, &source_sql, &alias)?;
    exprs.remove(position);
    exprs.insert(position, Expr::Identifier(ast::Ident::new("window_end")));
    exprs.insert(position, Expr::Identifier(ast::Ident::new("window_start")));
    Ok(true)
}

/// `TUMBLE(readings, ts, size)` or `TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), size))`
/// in FROM.
fn rewrite_factor(factor: &mut TableFactor) -> Result<bool> {
    match factor {
        TableFactor::Derived { subquery, .. } => rewrite_windows(subquery),
        TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } => {
            let kind = name.to_string().to_ascii_lowercase();
            if !matches!(kind.as_str(), "tumble" | "hop" | "session") {
                return Ok(false);
            }
            let texts: Vec<String> = args.args.iter().map(arg_sql).collect();
            let call = window_call(&kind, texts.get(1..).unwrap_or_default())?;
            let source = texts.first().cloned().ok_or_else(|| Error::Plan {
                sqlstate: "42601",
                message: format!(
                    "{} needs a relation, a time column and a size",
                    kind.to_uppercase()
                ),
            })?;
            let alias_name = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| source.rsplit('.').next().unwrap_or(&source).to_string());
            *factor = windowed_relation(&call, &source, &alias_name)?;
            Ok(true)
        }
        TableFactor::TableFunction { expr, alias } => {
            // Flink: TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size)).
            let Expr::Function(f) = expr else {
                return Ok(false);
            };
            let kind = f.name.to_string().to_ascii_lowercase();
            if !matches!(kind.as_str(), "tumble" | "hop" | "session") {
                return Ok(false);
            }
            let FunctionArguments::List(list) = &f.args else {
                return Ok(false);
            };
            let texts: Vec<String> = list.args.iter().map(arg_sql).collect();
            let strip = |s: &str, prefix: &str| -> String {
                let t = s.trim();
                if t.len() > prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix) {
                    t[prefix.len()..]
                        .trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .trim()
                        .to_string()
                } else {
                    t.to_string()
                }
            };
            let source = texts
                .first()
                .map(|s| strip(s, "TABLE"))
                .ok_or_else(|| Error::Unsupported("window without a relation".into()))?;
            let mut rest: Vec<String> = texts.iter().skip(1).cloned().collect();
            if let Some(t) = rest.first_mut() {
                *t = strip(t, "DESCRIPTOR");
            }
            let call = window_call(&kind, &rest)?;
            let alias_name = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| source.rsplit('.').next().unwrap_or(&source).to_string());
            *factor = windowed_relation(&call, &source, &alias_name)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn arg_sql(a: &FunctionArg) -> String {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e.to_string(),
        other => other.to_string(),
    }
}

fn window_call_in_group_by(e: &Expr) -> Option<Result<WindowCall>> {
    let Expr::Function(f) = e else {
        return None;
    };
    let kind = f.name.to_string().to_ascii_lowercase();
    if !matches!(kind.as_str(), "tumble" | "hop" | "session") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return Some(Err(Error::Plan {
            sqlstate: "42601",
            message: format!("{} needs a time column and a size", kind.to_uppercase()),
        }));
    };
    let texts: Vec<String> = list.args.iter().map(arg_sql).collect();
    Some(window_call(&kind, &texts))
}

fn window_call(kind: &str, args: &[String]) -> Result<WindowCall> {
    let expected = match kind {
        "hop" => 3,
        _ => 2,
    };
    if args.len() != expected {
        return Err(Error::Plan {
            sqlstate: "42601",
            message: format!(
                "{}(time_column, {}) takes {expected} arguments, got {}",
                kind.to_uppercase(),
                match kind {
                    "hop" => "slide, size",
                    "session" => "gap",
                    _ => "size",
                },
                args.len()
            ),
        });
    }
    Ok(WindowCall {
        kind: kind.to_string(),
        time: args[0].clone(),
        intervals: args[1..]
            .iter()
            .map(|a| interval_sql(a))
            .collect::<Result<_>>()?,
    })
}

/// `INTERVAL '5' SECOND` as is; a short literal like `'5s'` as an interval.
fn interval_sql(arg: &str) -> Result<String> {
    let parsed = SqlParser::new(&PostgreSqlDialect {})
        .try_with_sql(arg)?
        .parse_expr()?;
    match parsed {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => {
                let d = crate::connectors::parse_duration(s).ok_or_else(|| Error::Plan {
                    sqlstate: "22007",
                    message: format!(
                        "invalid window size '{s}'; use e.g. INTERVAL '5' SECOND or '5s'"
                    ),
                })?;
                if d.is_zero() {
                    return Err(Error::Plan {
                        sqlstate: "22023",
                        message: "a window size must be above zero".into(),
                    });
                }
                Ok(format!("INTERVAL '{} microseconds'", d.as_micros()))
            }
            _ => Err(Error::Plan {
                sqlstate: "42804",
                message: format!("a window size must be an interval, not {arg}"),
            }),
        },
        _ => Ok(arg.to_string()),
    }
}

/// Flink writes `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`, which the
/// PostgreSQL grammar cannot parse. Returns the text with the inner `TABLE`
/// and `DESCRIPTOR(...)` removed (`TABLE(TUMBLE(t, ts, size))`), or `None`
/// when the text has no such call.
pub fn flink_window_syntax(text: &str) -> Option<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let lower = text.to_ascii_lowercase();
    if !lower.contains("descriptor") {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .ok()?;
    let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let mut drop = vec![false; tokens.len()];
    for w in significant.windows(5) {
        let [a, b, c, d, e] = [w[0], w[1], w[2], w[3], w[4]];
        if word(&tokens[a], "TABLE")
            && tokens[b] == Token::LParen
            && ["tumble", "hop", "session"]
                .iter()
                .any(|k| word(&tokens[c], k))
            && tokens[d] == Token::LParen
            && word(&tokens[e], "TABLE")
        {
            drop[e] = true;
        }
    }
    for w in significant.windows(4) {
        let [a, b, c, d] = [w[0], w[1], w[2], w[3]];
        if word(&tokens[a], "DESCRIPTOR")
            && tokens[b] == Token::LParen
            && tokens[d] == Token::RParen
        {
            let _ = c;
            drop[a] = true;
            drop[b] = true;
            drop[d] = true;
        }
    }
    // Flink's SESSION(TABLE t PARTITION BY k, ...): sessions are per the
    // GROUP BY keys in runnel, so the clause is dropped (up to its comma).
    for (n, &p) in significant.iter().enumerate() {
        if word(&tokens[p], "PARTITION")
            && significant
                .get(n + 1)
                .is_some_and(|&b| word(&tokens[b], "BY"))
        {
            let mut depth = 0i32;
            for &q in &significant[n..] {
                match tokens[q] {
                    Token::LParen => depth += 1,
                    Token::RParen if depth == 0 => break,
                    Token::RParen => depth -= 1,
                    Token::Comma if depth == 0 => break,
                    _ => {}
                }
                drop[q] = true;
            }
        }
    }
    if !drop.iter().any(|d| *d) {
        return None;
    }
    Some(
        tokens
            .iter()
            .zip(drop)
            .filter(|(_, d)| !d)
            .map(|(t, _)| t.to_string())
            .collect(),
    )
}

/// The derived table that adds the window columns.
fn windowed_relation(call: &WindowCall, source: &str, alias: &str) -> Result<TableFactor> {
    let sql = match call.kind.as_str() {
        "tumble" => {
            let size = &call.intervals[0];
            let start = format!("date_bin({size}, {})", call.time);
            format!(
                "(SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {source}) AS {alias}"
            )
        }
        "session" => {
            // Each row's own session [ts, ts + gap); the streaming planner
            // merges them per key (operators::SessionWindowOperator).
            let gap = &call.intervals[0];
            format!(
                "(SELECT *, {time} AS window_start, session_end({time}, {gap}) AS window_end FROM {source}) AS {alias}",
                time = call.time
            )
        }
        _ => {
            // HOP(ts, slide, size): one row per window containing ts.
            let (slide, size) = (&call.intervals[0], &call.intervals[1]);
            format!(
                "(SELECT *, window_start + {size} AS window_end FROM \
                 (SELECT *, unnest(hop_starts({}, {slide}, {size})) AS window_start FROM {source}) AS {alias}) AS {alias}",
                call.time
            )
        }
    };
    let mut parser = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(&sql)?;
    Ok(parser.parse_table_factor()?)
}

/// The relation a GROUP BY window wraps, as SQL, and the name it keeps.
fn relation_sql(factor: &TableFactor) -> Result<(String, String)> {
    match factor {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let alias_name = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| {
                    name.0
                        .last()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| name.to_string())
                });
            Ok((name.to_string(), alias_name))
        }
        TableFactor::Derived {
            subquery,
            alias: Some(alias),
            ..
        } => Ok((format!("({subquery})"), alias.name.to_string())),
        _ => Err(Error::Unsupported(
            "GROUP BY TUMBLE needs a table, source, view or aliased subquery in FROM".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let sql = flink_window_syntax(sql).unwrap_or_else(|| sql.to_string());
        let mut statements = SqlParser::parse_sql(&PostgreSqlDialect {}, &sql).unwrap();
        let ast::Statement::Query(q) = &mut statements[0] else {
            panic!("not a query")
        };
        assert!(rewrite_windows(q).unwrap());
        q.to_string()
    }

    #[test]
    fn the_three_spellings_agree() {
        let expected = "SELECT window_start, sensor_id, count(*) FROM (SELECT *, date_bin(INTERVAL '5' SECOND, ts) AS window_start, date_bin(INTERVAL '5' SECOND, ts) + INTERVAL '5' SECOND AS window_end FROM readings) AS readings GROUP BY window_start, window_end, sensor_id";
        assert_eq!(
            rewritten(
                "SELECT window_start, sensor_id, count(*) FROM readings \
                 GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id"
            ),
            expected
        );
        assert_eq!(
            rewritten(
                "SELECT window_start, sensor_id, count(*) FROM TUMBLE(readings, ts, INTERVAL '5' SECOND) \
                 GROUP BY window_start, window_end, sensor_id"
            ),
            expected
        );
        assert_eq!(
            rewritten(
                "SELECT window_start, sensor_id, count(*) FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECOND)) \
                 GROUP BY window_start, window_end, sensor_id"
            ),
            expected
        );
    }

    #[test]
    fn short_sizes_and_mistakes() {
        assert!(
            rewritten("SELECT count(*) FROM r GROUP BY TUMBLE(ts, '5s')")
                .contains("INTERVAL '5000000 microseconds'")
        );
        let mut statements = SqlParser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT count(*) FROM r GROUP BY TUMBLE(ts, 'soon')",
        )
        .unwrap();
        let ast::Statement::Query(q) = &mut statements[0] else {
            panic!()
        };
        assert_eq!(rewrite_windows(q).unwrap_err().sqlstate(), "22007");
        let mut statements = SqlParser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT count(*) FROM r GROUP BY SESSION(ts)",
        )
        .unwrap();
        let ast::Statement::Query(q) = &mut statements[0] else {
            panic!()
        };
        assert_eq!(rewrite_windows(q).unwrap_err().sqlstate(), "42601");
        assert_eq!(
            flink_window_syntax(
                "SELECT * FROM TABLE(SESSION(TABLE bid PARTITION BY item, DESCRIPTOR(ts), INTERVAL '5' MINUTE))"
            )
            .unwrap()
            .replace(char::is_whitespace, ""),
            "SELECT*FROMTABLE(SESSION(bid,ts,INTERVAL'5'MINUTE))"
        );
        assert!(
            rewritten("SELECT count(*) FROM r GROUP BY SESSION(ts, '1 minute'), k")
                .contains("session_end(ts, INTERVAL '60000000 microseconds') AS window_end")
        );
    }
}
