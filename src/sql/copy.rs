//! COPY ... FROM STDIN / TO STDOUT: which table or query, and the text or
//! CSV options with PostgreSQL's per-format defaults resolved.

use datafusion::sql::sqlparser::ast;

use super::parser::{ident, object_name};
use super::statement::*;
use crate::error::{Error, Result};
use crate::unsupported;

pub(super) fn classify_copy(
    source: ast::CopySource,
    to: bool,
    target: ast::CopyTarget,
    options: Vec<ast::CopyOption>,
    legacy_options: Vec<ast::CopyLegacyOption>,
) -> Result<Statement> {
    match (&target, to) {
        (ast::CopyTarget::Stdin, false) | (ast::CopyTarget::Stdout, true) => {}
        _ => {
            return Err(unsupported!(
                "COPY to or from a file on the server is not supported; use STDIN/STDOUT (psql's \\copy)"
            ));
        }
    }
    let format = copy_format(&options, &legacy_options)?;
    let (name, columns) = match source {
        ast::CopySource::Table {
            table_name,
            columns,
        } => (
            object_name(&table_name)?,
            columns.iter().map(ident).collect(),
        ),
        ast::CopySource::Query(query) if to => {
            return Ok(Statement::CopyTo(CopyTo {
                source: CopySource::Query(query),
                format,
            }));
        }
        ast::CopySource::Query(_) => return Err(Error::syntax("COPY FROM needs a table")),
    };
    Ok(if to {
        Statement::CopyTo(CopyTo {
            source: CopySource::Table { name, columns },
            format,
        })
    } else {
        Statement::CopyFrom(CopyFrom {
            table: name,
            columns,
            format,
        })
    })
}

fn copy_format(
    options: &[ast::CopyOption],
    legacy: &[ast::CopyLegacyOption],
) -> Result<CopyFormat> {
    use ast::CopyOption as O;
    let csv = options.iter().any(|o| match o {
        O::Format(f) => f.value.eq_ignore_ascii_case("csv"),
        _ => false,
    }) || legacy
        .iter()
        .any(|o| matches!(o, ast::CopyLegacyOption::Csv(_)));
    let mut format = if csv {
        CopyFormat::csv()
    } else {
        CopyFormat::text()
    };
    for option in options {
        match option {
            O::Format(f) => {
                let f = f.value.to_ascii_lowercase();
                if f != "csv" && f != "text" {
                    return Err(unsupported!(
                        "COPY format {f} is not supported (use text or csv)"
                    ));
                }
            }
            O::Delimiter(c) => format.delimiter = ascii(*c, "DELIMITER")?,
            O::Null(s) => format.null = s.clone(),
            O::Header(h) => format.header = *h,
            O::Quote(c) => format.quote = ascii(*c, "QUOTE")?,
            O::Escape(c) => format.escape = ascii(*c, "ESCAPE")?,
            O::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {
            }
            O::Freeze(_) => {}
            other => return Err(unsupported!("COPY option {other} is not supported")),
        }
    }
    for option in legacy {
        match option {
            ast::CopyLegacyOption::Csv(csv_options) => {
                for o in csv_options {
                    match o {
                        ast::CopyLegacyCsvOption::Header => format.header = true,
                        ast::CopyLegacyCsvOption::Quote(c) => format.quote = ascii(*c, "QUOTE")?,
                        ast::CopyLegacyCsvOption::Escape(c) => format.escape = ascii(*c, "ESCAPE")?,
                        other => return Err(unsupported!("COPY option {other} is not supported")),
                    }
                }
            }
            ast::CopyLegacyOption::Delimiter(c) => format.delimiter = ascii(*c, "DELIMITER")?,
            ast::CopyLegacyOption::Null(s) => format.null = s.clone(),
            other => return Err(unsupported!("COPY option {other} is not supported")),
        }
    }
    Ok(format)
}

fn ascii(c: char, what: &str) -> Result<u8> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(Error::syntax(format!(
            "COPY {what} must be a single one-byte character"
        )))
    }
}
