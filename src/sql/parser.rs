//! The one entry point from SQL text to typed [`Statement`]s, used by the
//! simple and the extended query protocol alike.
//!
//! A query string is tokenized once and cut into statements at top-level
//! semicolons. Each statement is then parsed by runnel's extension parsers
//! (for statements the stock PostgreSQL grammar lacks, such as FLUSH or SHOW
//! SOURCES) or by sqlparser with datafusion-pg-catalog's compatibility
//! rewrites (which let DataFusion answer the catalog queries psql and drivers
//! send). This module must not execute anything.

use datafusion::sql::sqlparser::ast::{self, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{self, SqlStatementRewriteRule};

use super::copy::classify_copy;
use super::statement::*;
use crate::error::{Error, Result, resolve_line_col};
use crate::unsupported;

/// Parses query strings into statements. Cheap to share: one per database.
#[derive(Debug)]
pub struct Parser {
    /// For statements that read PostgreSQL's catalog: its token-level
    /// replacements and every rewrite, including those that trade exact
    /// answers for plannability (correlated subqueries become NULL).
    compat: PostgresCompatibilityParser,
    /// For every other statement: only the rewrites that keep answers exact.
    exact_rules: Vec<Box<dyn SqlStatementRewriteRule>>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            compat: PostgresCompatibilityParser::new(),
            exact_rules: vec![
                Box::new(rules::AliasDuplicatedProjectionRewrite),
                Box::new(rules::ResolveUnqualifiedIdentifier),
                Box::new(rules::RewriteArrayAnyAllOperation),
                Box::new(rules::StripCallableQualifier),
                Box::new(rules::FixArrayLiteral),
                Box::new(rules::CurrentUserVariableToSessionUserFunctionCall),
                Box::new(rules::StripCollate),
                Box::new(rules::RewritePgCatalogOperator),
                Box::new(rules::RewriteRegCastToSubquery::new()),
                Box::new(rules::FixVersionColumnName),
            ],
        }
    }
}

/// One statement of a query string with the text it came from.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub statement: Statement,
    /// The statement's own text (without the separating semicolon).
    pub sql: String,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every statement of `sql`. An empty or comment-only string gives
    /// an empty list.
    pub fn parse(&self, sql: &str) -> Result<Vec<ParsedStatement>> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .map_err(|e| {
                let err: Error =
                    datafusion::sql::sqlparser::parser::ParserError::TokenizerError(e.to_string())
                        .into();
                resolve(err, sql, 0)
            })?;
        let index = LineIndex::new(sql);
        let mut out = Vec::new();
        for range in split_statements(&tokens) {
            let first = &tokens[range.0];
            let last = &tokens[range.1];
            let start = index.byte_offset(first.span.start);
            let end = index.byte_offset(last.span.end);
            let text = &sql[start..end];
            let char_offset = sql[..start].chars().count();
            let statement = self
                .parse_one(text)
                .map_err(|e| resolve(e, text, char_offset))?;
            out.push(ParsedStatement {
                statement,
                sql: text.to_string(),
            });
        }
        Ok(out)
    }

    /// Parses a query string that must hold exactly one statement (the
    /// extended protocol's Parse message). `None` for an empty string.
    pub fn parse_single(&self, sql: &str) -> Result<Option<ParsedStatement>> {
        let mut statements = self.parse(sql)?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(statements.pop()),
            _ => Err(Error::syntax(
                "cannot insert multiple commands into a prepared statement",
            )),
        }
    }

    fn parse_one(&self, text: &str) -> Result<Statement> {
        if let Some(statement) = parse_extension(text)? {
            return Ok(statement);
        }
        // User statements skip the compatibility layer's lossy rewrites: a
        // query DataFusion cannot plan must fail, not answer NULL.
        let flink = super::window::flink_window_syntax(text);
        let text = flink.as_deref().unwrap_or(text);
        if let Ok(mut plain) = SqlParser::parse_sql(&PostgreSqlDialect {}, text)
            && plain.len() == 1
            && !reads_pg_catalog(&plain[0])
        {
            let mut statement = plain.remove(0);
            for rule in &self.exact_rules {
                statement = rule.rewrite(statement);
            }
            if let ast::Statement::Query(_) = statement {
                super::rewrite::rewrite_query(&mut statement);
            }
            match &mut statement {
                ast::Statement::Query(q) => {
                    super::window::rewrite_windows(q)?;
                }
                ast::Statement::CreateView(v) => {
                    super::window::rewrite_windows(&mut v.query)?;
                }
                ast::Statement::Explain { statement, .. } => match statement.as_mut() {
                    ast::Statement::Query(q) => {
                        super::window::rewrite_windows(q)?;
                    }
                    ast::Statement::CreateView(v) => {
                        super::window::rewrite_windows(&mut v.query)?;
                    }
                    _ => {}
                },
                _ => {}
            }
            return classify(statement);
        }
        let mut statements = match self.compat.parse(text) {
            Ok(statements) => statements,
            Err(compat_err) => {
                // The compatibility layer parses without positions; parse
                // again plainly to point at the problem.
                return Err(match SqlParser::parse_sql(&PostgreSqlDialect {}, text) {
                    Err(e) => e.into(),
                    Ok(_) => compat_err.into(),
                });
            }
        };
        if statements.len() != 1 {
            return Err(crate::internal!(
                "statement splitting produced {} statements",
                statements.len()
            ));
        }
        let mut statement = statements.remove(0);
        if let ast::Statement::Query(_) = statement {
            super::rewrite::name_foreign_kinds(&mut statement);
            let hoisted = super::rewrite::hoist_case_subqueries(&mut statement);
            if super::rewrite::rewrite_query(&mut statement) || hoisted {
                statement = self.compat.rewrite(statement);
            }
        }
        classify(statement)
    }
}

/// True when `statement` reads a table of `pg_catalog` or
/// `information_schema` (the catalog queries clients send).
fn reads_pg_catalog(statement: &ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::Visit;
    let mut found = false;
    let _ = statement.visit(&mut CatalogFinder(&mut found));
    found
}

struct CatalogFinder<'a>(&'a mut bool);

impl datafusion::sql::sqlparser::ast::Visitor for CatalogFinder<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> std::ops::ControlFlow<()> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
            .collect();
        let catalog_schema = parts.len() > 1
            && matches!(
                parts[parts.len() - 2].as_str(),
                "pg_catalog" | "information_schema"
            );
        let bare_catalog_table = parts.len() == 1 && PG_CATALOG_TABLES.contains(&parts[0].as_str());
        if catalog_schema || bare_catalog_table {
            *self.0 = true;
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Runnel's own statements, tried before the stock grammar. Returns `None`
/// when `text` is not one of them.
fn parse_extension(text: &str) -> Result<Option<Statement>> {
    let mut parser = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(text)?;
    if parse_word(&mut parser, "SUBSCRIBE") {
        let subscribe = super::subscribe::parse_subscribe(&mut parser)?;
        expect_end(&mut parser)?;
        return Ok(Some(Statement::Subscribe(subscribe)));
    }
    if parser.parse_keyword(Keyword::DECLARE) {
        return super::subscribe::parse_declare(&mut parser);
    }
    if parser.parse_keyword(Keyword::COPY) {
        return super::subscribe::parse_copy(&mut parser, text);
    }
    if parser.parse_keyword(Keyword::FLUSH) {
        expect_end(&mut parser)?;
        return Ok(Some(Statement::Flush));
    }
    if parse_word(&mut parser, "CHECKPOINT") {
        expect_end(&mut parser)?;
        return Ok(Some(Statement::Checkpoint));
    }
    if parser.parse_keyword(Keyword::EXPLAIN) {
        // EXPLAIN MATERIALIZED VIEW name: the operator graph of a running view.
        if parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
            let name = object_name(&parser.parse_object_name(false)?)?;
            expect_end(&mut parser)?;
            return Ok(Some(Statement::ExplainMaterializedView(
                ExplainTarget::Existing(name),
            )));
        }
        return Ok(None);
    }
    if parser.parse_keyword(Keyword::CREATE) {
        if parse_word(&mut parser, "SOURCE") {
            let create = super::source::parse_create_source(&mut parser)?;
            return Ok(Some(Statement::CreateSource(Box::new(create))));
        }
        if parse_word(&mut parser, "SINK") {
            let create = super::sink::parse_create_sink(&mut parser, text)?;
            return Ok(Some(Statement::CreateSink(Box::new(create))));
        }
        if parse_word(&mut parser, "EXTERNAL") {
            return super::sink::parse_create_external_table(text).map(Some);
        }
        return Ok(None);
    }
    if parser.parse_keyword(Keyword::DROP) {
        let kind = if parse_word(&mut parser, "SOURCE") {
            ObjectKind::Source
        } else if parse_word(&mut parser, "SINK") {
            ObjectKind::Sink
        } else {
            return Ok(None);
        };
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = parser
            .parse_comma_separated(|p| p.parse_object_name(false))?
            .iter()
            .map(object_name)
            .collect::<Result<Vec<_>>>()?;
        let cascade = parser.parse_keyword(Keyword::CASCADE);
        if !cascade {
            let _ = parser.parse_keyword(Keyword::RESTRICT);
        }
        expect_end(&mut parser)?;
        return Ok(Some(Statement::Drop(DropStatement {
            kind,
            if_exists,
            names,
            cascade,
        })));
    }
    if parser.parse_keyword(Keyword::SHOW) {
        let kind = if parser.parse_keyword(Keyword::TABLES) {
            ObjectKind::Table
        } else if parser.parse_keyword(Keyword::VIEWS) {
            ObjectKind::View
        } else if parser.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEWS]) {
            ObjectKind::MaterializedView
        } else if parse_word(&mut parser, "SOURCES") {
            ObjectKind::Source
        } else if parse_word(&mut parser, "SINKS") {
            ObjectKind::Sink
        } else {
            return Ok(None);
        };
        if parser.peek_token().token != Token::EOF {
            return Ok(None);
        }
        return Ok(Some(Statement::ShowObjects(kind)));
    }
    Ok(None)
}

/// Consumes a non-reserved word such as SOURCES, case-insensitively.
pub(super) fn parse_word(parser: &mut SqlParser, word: &str) -> bool {
    match parser.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
            parser.next_token();
            true
        }
        _ => false,
    }
}

pub(super) fn expect_end(parser: &mut SqlParser) -> Result<()> {
    let token = parser.peek_token();
    if token.token == Token::EOF {
        Ok(())
    } else {
        Err(parser
            .expected::<()>("end of statement", token)
            .unwrap_err()
            .into())
    }
}

/// Maps a stock sqlparser statement onto runnel's statement enum.
fn classify(statement: ast::Statement) -> Result<Statement> {
    use ast::Statement as S;
    Ok(match statement {
        S::Query(_) => Statement::Query(Box::new(statement)),
        S::Explain {
            statement: ref inner,
            ..
        } if matches!(inner.as_ref(), S::CreateView(v) if v.materialized) => {
            let S::Explain {
                statement: inner, ..
            } = statement
            else {
                unreachable!("matched above")
            };
            Statement::ExplainMaterializedView(ExplainTarget::Create(inner))
        }
        S::Explain { .. } | S::ExplainTable { .. } => Statement::Query(Box::new(statement)),
        S::Insert(_) => Statement::Insert(Box::new(statement)),
        S::CreateTable(_) => Statement::CreateTable(Box::new(statement)),
        S::CreateView(ref v) if v.materialized => {
            Statement::CreateMaterializedView(Box::new(statement))
        }
        S::CreateView(_) => Statement::CreateView(Box::new(statement)),
        S::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            ..
        } => {
            let kind = match object_type {
                ast::ObjectType::Table => ObjectKind::Table,
                ast::ObjectType::View => ObjectKind::View,
                ast::ObjectType::MaterializedView => ObjectKind::MaterializedView,
                other => return Err(unsupported!("DROP {other} is not supported")),
            };
            Statement::Drop(DropStatement {
                kind,
                if_exists,
                names: names.iter().map(object_name).collect::<Result<_>>()?,
                cascade,
            })
        }
        S::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => classify_copy(source, to, target, options, legacy_options)?,
        S::Set(set) => classify_set(set)?,
        S::ShowVariable { variable } => Statement::Show {
            name: variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        },
        S::Reset(reset) => Statement::Reset {
            name: match reset.reset {
                ast::Reset::ALL => None,
                ast::Reset::ConfigurationParameter(name) => Some(setting_name(&name)),
            },
        },
        S::Discard { .. } => Statement::Discard,
        S::StartTransaction { .. } => Statement::Begin,
        S::Commit { .. } => Statement::Commit,
        S::Rollback {
            savepoint: None, ..
        } => Statement::Rollback,
        S::Declare { mut stmts } if stmts.len() == 1 => {
            let declare = stmts.remove(0);
            match (
                declare.declare_type,
                declare.for_query,
                declare.names.first(),
            ) {
                (Some(ast::DeclareType::Cursor), Some(query), Some(name)) => {
                    Statement::DeclareCursor {
                        name: ident(name),
                        query: CursorQuery::Select(query),
                    }
                }
                _ => {
                    return Err(unsupported!(
                        "only DECLARE ... CURSOR FOR query is supported"
                    ));
                }
            }
        }
        S::Fetch {
            name, direction, ..
        } => Statement::Fetch {
            name: ident(&name),
            count: fetch_count(&direction)?,
        },
        S::Deallocate { name, .. } => Statement::Deallocate {
            name: (name.quote_style.is_some() || !name.value.eq_ignore_ascii_case("all"))
                .then(|| ident(&name)),
        },
        S::Close { cursor } => Statement::CloseCursor {
            name: match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(ident(&name)),
            },
        },
        other => {
            let text = other.to_string();
            let words: Vec<&str> = text.split_whitespace().take(2).collect();
            return Err(unsupported!(
                "{} is not supported by runnel",
                words.join(" ").to_uppercase()
            ));
        }
    })
}

fn classify_set(set: ast::Set) -> Result<Statement> {
    use ast::Set;
    Ok(match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let value = match values.as_slice() {
                [ast::Expr::Identifier(i)] if i.value.eq_ignore_ascii_case("default") => {
                    SetValue::Default
                }
                _ => SetValue::Value(
                    values
                        .iter()
                        .map(set_value_text)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            };
            Statement::Set {
                name: setting_name(&variable),
                value,
            }
        }
        Set::SetTimeZone { value, .. } => Statement::Set {
            name: "timezone".into(),
            value: SetValue::Value(set_value_text(&value)),
        },
        Set::SetNames { charset_name, .. } => Statement::Set {
            name: "client_encoding".into(),
            value: SetValue::Value(charset_name.value),
        },
        Set::SetNamesDefault {} => Statement::Set {
            name: "client_encoding".into(),
            value: SetValue::Default,
        },
        // Transaction characteristics mean nothing yet: every statement
        // commits on its own (see docs/sql-reference.md).
        Set::SetTransaction { .. } => Statement::Set {
            name: "transaction".into(),
            value: SetValue::Default,
        },
        other => return Err(unsupported!("{other} is not supported")),
    })
}

/// The text a SET value stands for: strings unquoted, identifiers and
/// numbers as written.
fn set_value_text(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.to_ascii_lowercase(),
            None => p.to_string().to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn fetch_count(direction: &ast::FetchDirection) -> Result<Option<u64>> {
    use ast::FetchDirection as D;
    let value = |v: &ast::ValueWithSpan| -> Result<u64> {
        v.value
            .to_string()
            .parse::<u64>()
            .map_err(|_| Error::syntax(format!("invalid FETCH count {}", v.value)))
    };
    match direction {
        D::Next | D::Forward { limit: None } => Ok(Some(1)),
        D::Count { limit } | D::Forward { limit: Some(limit) } => Ok(Some(value(limit)?)),
        D::All | D::ForwardAll => Ok(None),
        other => Err(Error::Plan {
            sqlstate: "55000",
            message: format!("cursor can only scan forward (FETCH {other} is not supported)"),
        }),
    }
}

pub(super) fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// The catalog name of a relation: its last part, folded like PostgreSQL
/// folds unquoted identifiers. A schema qualifier must be `public`.
pub fn object_name(name: &ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(ident).unwrap_or_else(|| p.to_string()))
        .collect();
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] | [_, schema, name] if schema == "public" => Ok(name.clone()),
        _ => Err(Error::catalog(
            crate::error::CatalogErrorKind::UndefinedObject,
            format!(
                "schema of \"{name}\" does not exist (runnel keeps user objects in \"public\")"
            ),
        )),
    }
}

/// Token index ranges (first, last inclusive) of each non-empty statement,
/// split at top-level semicolons, skipping whitespace and comments.
fn split_statements(tokens: &[TokenWithSpan]) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut first: Option<usize> = None;
    let mut last = 0;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::SemiColon => {
                if let Some(f) = first.take() {
                    ranges.push((f, last));
                }
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => {
                first.get_or_insert(i);
                last = i;
            }
        }
    }
    if let Some(f) = first {
        ranges.push((f, last));
    }
    ranges
}

/// Converts sqlparser's 1-based (line, column-in-characters) locations into
/// byte offsets of the query string.
pub(super) struct LineIndex<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(super) fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { sql, line_starts }
    }

    pub(super) fn byte_offset(&self, loc: Location) -> usize {
        let line = (loc.line as usize).saturating_sub(1);
        let Some(&start) = self.line_starts.get(line) else {
            return self.sql.len();
        };
        let col = (loc.column as usize).saturating_sub(1);
        self.sql[start..]
            .char_indices()
            .nth(col)
            .map(|(i, _)| start + i)
            .unwrap_or(self.sql.len())
    }
}

/// Turns a syntax error's packed (line, column) within `text` into a
/// character offset within the whole query string.
fn resolve(err: Error, text: &str, char_offset: usize) -> Error {
    match err {
        // sqlparser gives no location for "found: EOF"; PostgreSQL points
        // just past the end of the statement.
        Error::Syntax {
            message,
            position: None,
        } if message.ends_with("found: EOF") => Error::Syntax {
            message,
            position: Some(char_offset + text.chars().count() + 1),
        },
        Error::Syntax {
            message,
            position: Some(packed),
        } => Error::Syntax {
            message,
            position: Some(char_offset + resolve_line_col(packed, text)),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Vec<Statement> {
        Parser::new()
            .parse(sql)
            .unwrap()
            .into_iter()
            .map(|p| p.statement)
            .collect()
    }

    #[test]
    fn empty_and_comment_only_queries_have_no_statements() {
        assert!(parse("").is_empty());
        assert!(parse(" ;; -- nothing\n /* at all */ ;").is_empty());
    }

    #[test]
    fn splits_statements_at_top_level_semicolons() {
        let parsed = Parser::new()
            .parse("SELECT 'a;b'; SELECT 2 -- x;\n;FLUSH")
            .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].sql, "SELECT 'a;b'");
        assert!(matches!(parsed[2].statement, Statement::Flush));
        let parsed = Parser::new().parse("CHECKPOINT").unwrap();
        assert!(matches!(parsed[0].statement, Statement::Checkpoint));
    }

    #[test]
    fn extension_statements_parse() {
        assert!(matches!(
            parse("show sources")[..],
            [Statement::ShowObjects(ObjectKind::Source)]
        ));
        assert!(matches!(
            parse("SHOW MATERIALIZED VIEWS")[..],
            [Statement::ShowObjects(ObjectKind::MaterializedView)]
        ));
        assert!(matches!(
            parse("SHOW search_path")[..],
            [Statement::Show { .. }]
        ));
    }

    #[test]
    fn syntax_errors_point_into_the_whole_query() {
        let err = Parser::new().parse("SELECT 1;\nSELEC 2").unwrap_err();
        assert_eq!(err.sqlstate(), "42601");
        assert_eq!(err.position(), Some(11));
    }

    #[test]
    fn user_subqueries_keep_their_meaning() {
        // The catalog compatibility rules would turn this correlated
        // subquery into NULL; a user query must keep it.
        let parsed = parse("SELECT (SELECT name FROM u WHERE u.id = t.id) AS n FROM t");
        let Statement::Query(q) = &parsed[0] else {
            panic!()
        };
        assert!(
            q.to_string()
                .contains("SELECT name FROM u WHERE u.id = t.id")
        );
    }

    #[test]
    fn set_forms() {
        let s = parse("SET search_path TO public; SET TIME ZONE 'UTC'; SET x = DEFAULT");
        assert!(
            matches!(&s[0], Statement::Set { name, value: SetValue::Value(v) } if name == "search_path" && v == "public")
        );
        assert!(matches!(&s[1], Statement::Set { name, .. } if name == "timezone"));
        assert!(matches!(
            &s[2],
            Statement::Set {
                value: SetValue::Default,
                ..
            }
        ));
    }

    #[test]
    fn copy_forms() {
        let s = parse("COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER true)");
        let Statement::CopyFrom(c) = &s[0] else {
            panic!()
        };
        assert_eq!(c.columns, vec!["a", "b"]);
        assert!(c.format.csv && c.format.header);
        let s = parse("COPY (SELECT 1) TO STDOUT");
        assert!(matches!(&s[0], Statement::CopyTo(_)));
        assert_eq!(
            Parser::new()
                .parse("COPY t FROM '/etc/passwd'")
                .unwrap_err()
                .sqlstate(),
            "0A000"
        );
    }
}
