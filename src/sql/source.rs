//! The grammar of CREATE SOURCE and DROP SOURCE, which PostgreSQL lacks.
//!
//! Parsing only: the result is a plain [`CreateSource`] whose options are
//! still text. Meaning (which connector, which options are valid, whether the
//! watermark column is a timestamp) is checked by `connectors::SourceSpec`,
//! so that the same rules apply to statements replayed from the catalog.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::parser::object_name;
use crate::error::{Error, Result};

/// `CREATE SOURCE name (columns, WATERMARK FOR c AS expr) [INCLUDE ...]
/// WITH (options) [FORMAT f [ENCODE e] [(options)]]`.
#[derive(Debug, Clone)]
pub struct CreateSource {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ast::ColumnDef>,
    pub watermark: Option<WatermarkClause>,
    /// Connector metadata columns asked for with `INCLUDE kind [AS name]`.
    pub include: Vec<IncludeClause>,
    /// The WITH options; keys lower-cased, dotted keys joined with '.'.
    pub options: BTreeMap<String, String>,
    /// `FORMAT x` or `FORMAT PLAIN ENCODE x`; `None` when only WITH says it.
    pub format: Option<String>,
    /// Options in parentheses after FORMAT (`FORMAT CSV (delimiter = ';')`).
    pub format_options: BTreeMap<String, String>,
}

/// `WATERMARK FOR column AS expression`.
#[derive(Debug, Clone)]
pub struct WatermarkClause {
    pub column: String,
    pub expr: ast::Expr,
}

/// `INCLUDE partition AS p`.
#[derive(Debug, Clone, PartialEq)]
pub struct IncludeClause {
    pub kind: String,
    pub alias: Option<String>,
}

/// Parses the rest of a CREATE SOURCE after the keywords `CREATE SOURCE`.
pub(super) fn parse_create_source(parser: &mut SqlParser) -> Result<CreateSource> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&parser.parse_object_name(false)?)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    if parser.consume_token(&Token::LParen) {
        loop {
            if parse_word(parser, "WATERMARK") {
                parser.expect_keyword(Keyword::FOR)?;
                let column = parser.parse_identifier()?;
                parser.expect_keyword(Keyword::AS)?;
                let expr = parser.parse_expr()?;
                if watermark.is_some() {
                    return Err(Error::Plan {
                        sqlstate: "42P16",
                        message: "a source can have only one WATERMARK".into(),
                    });
                }
                watermark = Some(WatermarkClause {
                    column: normalize(&column),
                    expr,
                });
            } else {
                columns.push(parser.parse_column_def()?);
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    let mut include = Vec::new();
    while parser.parse_keyword(Keyword::INCLUDE) {
        let kind = parser.parse_identifier()?.value.to_ascii_lowercase();
        let alias = if parser.parse_keyword(Keyword::AS) {
            Some(normalize(&parser.parse_identifier()?))
        } else {
            None
        };
        include.push(IncludeClause { kind, alias });
    }
    let mut options = BTreeMap::new();
    if parser.parse_keyword(Keyword::WITH) {
        options = parse_options(parser)?;
    }
    let mut format = None;
    let mut format_options = BTreeMap::new();
    if parser.parse_keyword(Keyword::FORMAT) {
        let first = parser.parse_identifier()?.value.to_ascii_lowercase();
        // RisingWave: FORMAT PLAIN ENCODE JSON [( options )].
        let chosen = if parse_word(parser, "ENCODE") {
            if first != "plain" {
                return Err(Error::Unsupported(format!(
                    "FORMAT {} is not supported; runnel reads append-only records (FORMAT PLAIN)",
                    first.to_ascii_uppercase()
                )));
            }
            parser.parse_identifier()?.value.to_ascii_lowercase()
        } else {
            first
        };
        format = Some(chosen);
        if parser.peek_token().token == Token::LParen {
            format_options = parse_options(parser)?;
        }
    }
    super::parser::expect_end(parser)?;
    Ok(CreateSource {
        name,
        if_not_exists,
        columns,
        watermark,
        include,
        options,
        format,
        format_options,
    })
}

/// `( key = 'value', a.b.c = 'v', n = 5 )`.
pub(super) fn parse_options(parser: &mut SqlParser) -> Result<BTreeMap<String, String>> {
    parser.expect_token(&Token::LParen)?;
    let mut options = BTreeMap::new();
    if parser.consume_token(&Token::RParen) {
        return Ok(options);
    }
    loop {
        let mut key = option_key_part(parser)?;
        while parser.consume_token(&Token::Period) {
            key.push('.');
            key.push_str(&option_key_part(parser)?);
        }
        parser.expect_token(&Token::Eq)?;
        let token = parser.next_token();
        let value = match token.token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
            Token::Number(n, _) => n,
            Token::Word(w) => w.value,
            Token::Minus => match parser.next_token().token {
                Token::Number(n, _) => format!("-{n}"),
                _ => return Err(parser.expected::<()>("a number", token).unwrap_err().into()),
            },
            _ => {
                return Err(parser
                    .expected::<()>("an option value", token)
                    .unwrap_err()
                    .into());
            }
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(Error::Plan {
                sqlstate: "42710",
                message: format!("option \"{key}\" is given more than once"),
            });
        }
        if parser.consume_token(&Token::Comma) {
            continue;
        }
        parser.expect_token(&Token::RParen)?;
        return Ok(options);
    }
}

/// One part of a dotted option key; keywords such as `offset` are allowed.
fn option_key_part(parser: &mut SqlParser) -> Result<String> {
    let token = parser.next_token();
    match token.token {
        Token::Word(w) if w.quote_style.is_some() => Ok(w.value),
        Token::Word(w) => Ok(w.value.to_ascii_lowercase()),
        Token::SingleQuotedString(s) => Ok(s),
        _ => Err(parser
            .expected::<()>("an option name", token)
            .unwrap_err()
            .into()),
    }
}

fn normalize(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

fn parse_word(parser: &mut SqlParser, word: &str) -> bool {
    super::parser::parse_word(parser, word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    fn parse(sql: &str) -> Result<CreateSource> {
        let mut p = SqlParser::new(&PostgreSqlDialect {}).try_with_sql(sql)?;
        assert!(p.parse_keyword(Keyword::CREATE));
        assert!(parse_word(&mut p, "SOURCE"));
        parse_create_source(&mut p)
    }

    #[test]
    fn full_form() {
        let s = parse(
            "CREATE SOURCE IF NOT EXISTS Readings (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) INCLUDE partition AS p INCLUDE offset \
             WITH (connector = 'kafka', topic = 'readings', properties.bootstrap.server = '127.0.0.1:9092', \
             scan.startup.mode = 'earliest', n = 5) FORMAT JSON",
        )
        .unwrap();
        assert_eq!(s.name, "readings");
        assert!(s.if_not_exists);
        assert_eq!(s.columns.len(), 3);
        let wm = s.watermark.unwrap();
        assert_eq!(wm.column, "ts");
        assert_eq!(wm.expr.to_string(), "ts - INTERVAL '2' SECOND");
        assert_eq!(
            s.include,
            vec![
                IncludeClause {
                    kind: "partition".into(),
                    alias: Some("p".into())
                },
                IncludeClause {
                    kind: "offset".into(),
                    alias: None
                }
            ]
        );
        assert_eq!(s.options["properties.bootstrap.server"], "127.0.0.1:9092");
        assert_eq!(s.options["scan.startup.mode"], "earliest");
        assert_eq!(s.options["n"], "5");
        assert_eq!(s.format.as_deref(), Some("json"));
    }

    #[test]
    fn risingwave_format_and_format_options() {
        let s = parse(
            "CREATE SOURCE s (a INT) WITH (connector = 'file', path = '/x') \
             FORMAT PLAIN ENCODE CSV (delimiter = ';', header = true)",
        )
        .unwrap();
        assert_eq!(s.format.as_deref(), Some("csv"));
        assert_eq!(s.format_options["delimiter"], ";");
        assert_eq!(s.format_options["header"], "true");
        let raw =
            parse("CREATE SOURCE s WITH (connector = 'tcp', port = 9999) FORMAT RAW").unwrap();
        assert!(raw.columns.is_empty());
        assert_eq!(raw.options["port"], "9999");
    }

    #[test]
    fn mistakes_are_syntax_errors_or_refused() {
        assert!(parse("CREATE SOURCE s (a INT,) WITH (connector = 'x')").is_err());
        assert!(parse("CREATE SOURCE s (a INT) WITH (connector = 'x', connector = 'y')").is_err());
        assert!(parse("CREATE SOURCE s (a INT) WITH (connector 'x')").is_err());
        assert!(parse("CREATE SOURCE s (a INT) FORMAT UPSERT ENCODE JSON").is_err());
        assert!(parse("CREATE SOURCE s (a INT) WITH (connector = 'x') trailing").is_err());
    }
}
