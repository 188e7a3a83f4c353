//! The grammar of CREATE SINK, which PostgreSQL lacks:
//!
//! ```text
//! CREATE SINK [IF NOT EXISTS] name FROM relation WITH (options)
//! CREATE SINK [IF NOT EXISTS] name [WITH (options)] AS query [WITH (options)]
//! ```
//!
//! Parsing only: options stay text and the query stays text (it is parsed
//! again as a statement of its own when the sink is built, so it gets every
//! rewrite a SELECT gets, window syntax included). What the options mean is
//! checked by `connectors::sinks`, so the same rules apply to statements
//! replayed from the catalog.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::parser::{LineIndex, object_name};
use crate::error::{Error, Result};

/// `CREATE SINK name FROM v WITH (...)` or `CREATE SINK name AS SELECT ...`.
#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    pub input: SinkInput,
    /// The WITH options; keys lower-cased, dotted keys joined with '.'.
    pub options: BTreeMap<String, String>,
}

/// What a sink writes.
#[derive(Debug, Clone)]
pub enum SinkInput {
    /// A materialized view or a source, by name.
    Relation(String),
    /// The text of a query, planned like a materialized view's.
    Query(String),
}

/// Parses the rest of a CREATE SINK after the keywords `CREATE SINK`;
/// `text` is the whole statement (to cut the query out of it).
pub(super) fn parse_create_sink(parser: &mut SqlParser, text: &str) -> Result<CreateSink> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&parser.parse_object_name(false)?)?;
    let mut options = BTreeMap::new();
    let input = if parser.parse_keyword(Keyword::FROM) {
        SinkInput::Relation(object_name(&parser.parse_object_name(false)?)?)
    } else {
        if parser.parse_keyword(Keyword::WITH) {
            options = super::source::parse_options(parser)?;
        }
        parser.expect_keyword(Keyword::AS)?;
        let start = LineIndex::new(text).byte_offset(parser.peek_token().span.start);
        let (query, trailing) = split_trailing_options(&text[start..])?;
        if let Some(trailing) = trailing {
            if !options.is_empty() {
                return Err(Error::syntax(
                    "CREATE SINK takes one WITH (...) list of options",
                ));
            }
            options = trailing;
        }
        let mut check = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(query)?;
        check.parse_query()?;
        super::parser::expect_end(&mut check)?;
        return Ok(CreateSink {
            name,
            if_not_exists,
            input: SinkInput::Query(query.trim().to_string()),
            options,
        });
    };
    if parser.parse_keyword(Keyword::WITH) {
        options = super::source::parse_options(parser)?;
    }
    super::parser::expect_end(parser)?;
    Ok(CreateSink {
        name,
        if_not_exists,
        input,
        options,
    })
}

/// Cuts `query WITH (options)` at the last top-level `WITH (` whose rest
/// is exactly an option list. (sqlparser would read `FROM t WITH (...)`
/// as table hints, so the query cannot be parsed first.)
fn split_trailing_options(text: &str) -> Result<(&str, Option<BTreeMap<String, String>>)> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| Error::syntax(e.to_string()))?;
    let index = LineIndex::new(text);
    let mut depth = 0i32;
    let mut candidates = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.keyword == Keyword::WITH && i > 0 => {
                let next = tokens[i + 1..]
                    .iter()
                    .find(|t| !matches!(t.token, Token::Whitespace(_)));
                if next.is_some_and(|n| n.token == Token::LParen) {
                    candidates.push(index.byte_offset(t.span.start));
                }
            }
            _ => {}
        }
    }
    for at in candidates.into_iter().rev() {
        let mut p = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(&text[at..])?;
        if !p.parse_keyword(Keyword::WITH) {
            continue;
        }
        if let Ok(options) = super::source::parse_options(&mut p)
            && p.peek_token().token == Token::EOF
        {
            return Ok((&text[..at], Some(options)));
        }
    }
    Ok((text, None))
}

/// `CREATE EXTERNAL TABLE ... STORED AS PARQUET LOCATION '...'`, which
/// only DataFusion's own parser knows: the way to read a sink's files (or
/// any Parquet, CSV or JSON files) back with SQL.
pub(super) fn parse_create_external_table(text: &str) -> Result<super::Statement> {
    use datafusion::sql::parser::{DFParser, Statement as DfStatement};
    let mut statements = DFParser::parse_sql_with_dialect(text, &PostgreSqlDialect {})?;
    match (statements.len(), statements.pop_front()) {
        (1, Some(DfStatement::CreateExternalTable(create))) => {
            Ok(super::Statement::CreateExternalTable(Box::new(create)))
        }
        _ => Err(Error::syntax(
            "expected CREATE EXTERNAL TABLE name [(columns)] STORED AS format LOCATION 'path'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<CreateSink> {
        let mut p = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(sql)?;
        assert!(p.parse_keyword(Keyword::CREATE));
        assert!(super::super::parser::parse_word(&mut p, "SINK"));
        parse_create_sink(&mut p, sql)
    }

    #[test]
    fn from_a_view_with_options() {
        let s = parse(
            "CREATE SINK IF NOT EXISTS Archive FROM temps_5s WITH (connector = 'parquet', \
             path = './archive/temps', partition_by = 'date(window_start)', rollover_rows = 1000)",
        )
        .unwrap();
        assert_eq!(s.name, "archive");
        assert!(s.if_not_exists);
        assert!(matches!(&s.input, SinkInput::Relation(v) if v == "temps_5s"));
        assert_eq!(s.options["partition_by"], "date(window_start)");
        assert_eq!(s.options["rollover_rows"], "1000");
    }

    #[test]
    fn as_a_query_with_options_before_or_after() {
        let s = parse(
            "CREATE SINK s AS SELECT a, b FROM t WHERE a > 1 WITH (connector = 'parquet', path = '/x')",
        )
        .unwrap();
        assert!(matches!(&s.input, SinkInput::Query(q) if q == "SELECT a, b FROM t WHERE a > 1"));
        assert_eq!(s.options["path"], "/x");
        let s = parse("CREATE SINK s AS SELECT * FROM t WITH (path = '/x')").unwrap();
        assert!(matches!(&s.input, SinkInput::Query(q) if q == "SELECT * FROM t"));
        assert_eq!(s.options["path"], "/x");
        let s = parse("CREATE SINK s WITH (path = '/x') AS SELECT * FROM t").unwrap();
        assert!(matches!(&s.input, SinkInput::Query(q) if q == "SELECT * FROM t"));
        assert_eq!(s.options["path"], "/x");
    }

    #[test]
    fn mistakes_are_syntax_errors() {
        assert!(parse("CREATE SINK s").is_err());
        assert!(parse("CREATE SINK s FROM v WITH (path '/x')").is_err());
        assert!(parse("CREATE SINK s WITH (a = 1) AS SELECT 1 WITH (b = 2)").is_err());
        assert!(parse("CREATE SINK s FROM v WITH (path = '/x') trailing").is_err());
    }
}
