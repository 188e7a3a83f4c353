//! SUBSCRIBE's grammar: `SUBSCRIBE [TO] view [WITH (snapshot = bool)]` on
//! its own, as a cursor's query (`DECLARE c CURSOR FOR SUBSCRIBE ...`) and
//! as COPY's source (`COPY (SUBSCRIBE ...) TO STDOUT [WITH (...)]`).
//!
//! The stock grammar has no SUBSCRIBE, so the two wrapping statements are
//! recognised here before sqlparser sees them; every other DECLARE and COPY
//! is left to sqlparser. This module parses only.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::copy::classify_copy;
use super::parser::{LineIndex, expect_end, ident, object_name, parse_word};
use super::statement::*;
use crate::error::{Error, Result};
use crate::unsupported;

/// The rest of a SUBSCRIBE after its keyword: `[TO] view [WITH (...)]`.
pub(super) fn parse_subscribe(parser: &mut SqlParser) -> Result<Subscribe> {
    let _ = parser.parse_keyword(Keyword::TO);
    if parser.peek_token().token == Token::LParen {
        return Err(unsupported!(
            "SUBSCRIBE TO (query) is not supported; create a materialized view of the query \
             and subscribe to it"
        ));
    }
    let view = object_name(&parser.parse_object_name(false)?)?;
    let mut subscribe = Subscribe {
        view,
        snapshot: true,
    };
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let option = ident(&parser.parse_identifier()?);
            let value = if parser.consume_token(&Token::Eq) {
                Some(option_value(parser)?)
            } else {
                None
            };
            match option.as_str() {
                // `WITH (SNAPSHOT)` alone means true, as in Materialize.
                "snapshot" => {
                    subscribe.snapshot = match value.as_deref() {
                        None => true,
                        Some(v) => parse_bool(v).ok_or_else(|| {
                            invalid(format!(
                                "SUBSCRIBE option snapshot must be true or false, not \"{v}\""
                            ))
                        })?,
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown SUBSCRIBE option \"{other}\" (valid options: snapshot)"
                    )));
                }
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    Ok(subscribe)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" | "t" => Some(true),
        "false" | "off" | "no" | "0" | "f" => Some(false),
        _ => None,
    }
}

fn invalid(message: String) -> Error {
    Error::Plan {
        sqlstate: "22023",
        message,
    }
}

/// An option's value as text: a word, a string or a number.
fn option_value(parser: &mut SqlParser) -> Result<String> {
    let token = parser.next_token();
    match token.token {
        Token::Word(w) => Ok(w.value),
        Token::SingleQuotedString(s) => Ok(s),
        Token::Number(n, _) => Ok(n),
        _ => Err(parser
            .expected::<()>("an option value", token)
            .unwrap_err()
            .into()),
    }
}

/// `DECLARE name [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR SUBSCRIBE ...`,
/// with DECLARE already consumed; `None` for any other DECLARE.
pub(super) fn parse_declare(parser: &mut SqlParser) -> Result<Option<Statement>> {
    let Some(for_at) = (0..16).find(
        |&i| matches!(&parser.peek_nth_token(i).token, Token::Word(w) if w.keyword == Keyword::FOR),
    ) else {
        return Ok(None);
    };
    if !matches!(&parser.peek_nth_token(for_at + 1).token,
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("SUBSCRIBE"))
    {
        return Ok(None);
    }
    let name = ident(&parser.parse_identifier()?);
    let mut cursor = false;
    loop {
        let token = parser.next_token();
        let Token::Word(w) = &token.token else {
            return Err(parser.expected::<()>("CURSOR", token).unwrap_err().into());
        };
        match w.keyword {
            Keyword::FOR if cursor => break,
            Keyword::CURSOR => cursor = true,
            Keyword::NO | Keyword::SCROLL | Keyword::INSENSITIVE | Keyword::ASENSITIVE => {}
            Keyword::WITH | Keyword::WITHOUT if cursor => {
                if !parser.parse_keyword(Keyword::HOLD) {
                    return Err(parser
                        .expected::<()>("HOLD", parser.peek_token())
                        .unwrap_err()
                        .into());
                }
            }
            Keyword::BINARY => {
                return Err(unsupported!("BINARY cursors are not supported"));
            }
            _ => return Err(parser.expected::<()>("CURSOR", token).unwrap_err().into()),
        }
    }
    if !parse_word(parser, "SUBSCRIBE") {
        return Err(crate::internal!("SUBSCRIBE cursor lost its keyword"));
    }
    let subscribe = parse_subscribe(parser)?;
    expect_end(parser)?;
    Ok(Some(Statement::DeclareCursor {
        name,
        query: CursorQuery::Subscribe(subscribe),
    }))
}

/// `COPY (SUBSCRIBE ...) TO STDOUT [WITH (...)]`, with COPY already
/// consumed; `None` for any other COPY. What follows the parenthesis is
/// parsed by sqlparser's COPY grammar, so every COPY option works as for a
/// query.
pub(super) fn parse_copy(parser: &mut SqlParser, text: &str) -> Result<Option<Statement>> {
    let starts_subscribe = parser.peek_token().token == Token::LParen
        && matches!(&parser.peek_nth_token(1).token,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("SUBSCRIBE"));
    if !starts_subscribe {
        return Ok(None);
    }
    parser.expect_token(&Token::LParen)?;
    parse_word(parser, "SUBSCRIBE");
    let subscribe = parse_subscribe(parser)?;
    parser.expect_token(&Token::RParen)?;
    let rest = &text[LineIndex::new(text).byte_offset(parser.peek_token().span.start)..];
    let mut statements =
        SqlParser::parse_sql(&PostgreSqlDialect {}, &format!("COPY (SELECT 1) {rest}"))?;
    let copy = (statements.len() == 1).then(|| statements.remove(0));
    let Some(ast::Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    }) = copy
    else {
        return Err(Error::syntax(
            "COPY (SUBSCRIBE ...) must be one COPY statement",
        ));
    };
    match classify_copy(source, to, target, options, legacy_options)? {
        Statement::CopyTo(mut copy) => {
            copy.source = CopySource::Subscribe(subscribe);
            Ok(Some(Statement::CopyTo(copy)))
        }
        _ => Err(Error::syntax("COPY (SUBSCRIBE ...) needs TO STDOUT")),
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::{CopySource, CursorQuery, Parser, Statement, Subscribe};

    fn parse(sql: &str) -> crate::Result<Statement> {
        let mut parsed = Parser::new().parse(sql)?;
        assert_eq!(parsed.len(), 1, "{sql}");
        Ok(parsed.remove(0).statement)
    }

    fn subscribe(sql: &str) -> Subscribe {
        match parse(sql).unwrap() {
            Statement::Subscribe(s) => s,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn subscribe_forms() {
        let s = subscribe("SUBSCRIBE TO v");
        assert_eq!((s.view.as_str(), s.snapshot), ("v", true));
        assert_eq!(subscribe("subscribe \"V\"").view, "V");
        assert_eq!(subscribe("SUBSCRIBE public.v").view, "v");
        assert!(!subscribe("SUBSCRIBE TO v WITH (snapshot = false)").snapshot);
        assert!(!subscribe("SUBSCRIBE v WITH (SNAPSHOT = 'off')").snapshot);
        assert!(subscribe("SUBSCRIBE v WITH (snapshot)").snapshot);
        for (sql, state) in [
            ("SUBSCRIBE TO (SELECT * FROM v)", "0A000"),
            ("SUBSCRIBE TO v WITH (progress = true)", "22023"),
            ("SUBSCRIBE TO v WITH (snapshot = maybe)", "22023"),
            ("SUBSCRIBE TO v extra", "42601"),
            ("SUBSCRIBE", "42601"),
        ] {
            assert_eq!(parse(sql).unwrap_err().sqlstate(), state, "{sql}");
        }
    }

    #[test]
    fn cursors_and_copy_wrap_a_subscribe() {
        let Statement::DeclareCursor {
            name,
            query: CursorQuery::Subscribe(s),
        } = parse(
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SUBSCRIBE TO v WITH (snapshot = false)",
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (name.as_str(), s.view.as_str(), s.snapshot),
            ("c", "v", false)
        );
        // Other cursors are still sqlparser's.
        assert!(matches!(
            parse("DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT 1").unwrap(),
            Statement::DeclareCursor {
                query: CursorQuery::Select(_),
                ..
            }
        ));
        let Statement::CopyTo(copy) =
            parse("COPY (SUBSCRIBE v) TO STDOUT WITH (FORMAT csv, HEADER true)").unwrap()
        else {
            panic!()
        };
        assert!(matches!(&copy.source, CopySource::Subscribe(s) if s.view == "v"));
        assert!(copy.format.csv && copy.format.header);
        assert!(matches!(
            parse("COPY (SELECT 1) TO STDOUT").unwrap(),
            Statement::CopyTo(c) if matches!(c.source, CopySource::Query(_))
        ));
        assert!(parse("COPY (SUBSCRIBE v) TO '/tmp/x'").is_err());
    }
}
