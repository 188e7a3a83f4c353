//! COPY ... FROM STDIN: decoding PostgreSQL text and CSV COPY data into
//! Arrow columns of the target table.
//!
//! Values are gathered column by column as strings and converted with Arrow's
//! cast kernels, so a COPY costs a few vectorized passes, not a parse per
//! value. The whole COPY is appended to the table as one durable unit: all of
//! it lands or none of it. This module does not speak pgwire.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use super::Session;
use crate::error::{CatalogErrorKind, Error, Result};
use crate::sql::{CopyFormat, CopyFrom};
use crate::storage::TableHandle;

/// Rows accumulate in column builders until a batch is this large.
const BATCH_ROWS: usize = 64 * 1024;

/// An open COPY FROM STDIN, receiving data from the client.
pub struct CopyIn {
    table_name: String,
    table: Arc<TableHandle>,
    schema: SchemaRef,
    /// For each column the client sends, its index in the table.
    targets: Vec<usize>,
    format: CopyFormat,
    /// Bytes received but not yet cut into complete lines.
    pending: Vec<u8>,
    builders: Vec<StringBuilder>,
    rows_in_builders: usize,
    /// Decoded batches waiting for the end of the COPY.
    batches: Vec<RecordBatch>,
    line: u64,
    header_skipped: bool,
    finished: bool,
    ctx: SessionContext,
}

impl CopyIn {
    pub fn try_new(session: &Session, copy: &CopyFrom) -> Result<Self> {
        let entry = session
            .database()
            .catalog()
            .get(&copy.table)
            .ok_or_else(|| {
                Error::catalog(
                    CatalogErrorKind::UndefinedTable,
                    format!("relation \"{}\" does not exist", copy.table),
                )
            })?;
        let provider: &dyn TableProvider = entry.provider.as_ref();
        let table = (provider as &dyn std::any::Any)
            .downcast_ref::<TableHandle>()
            .cloned()
            .ok_or_else(|| Error::Plan {
                sqlstate: "42809",
                message: format!(
                    "cannot copy into \"{}\": it is a {}, not a table",
                    copy.table, entry.def.kind
                ),
            })?;
        let schema = table.schema();
        let targets = if copy.columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            copy.columns
                .iter()
                .map(|c| {
                    schema.index_of(c).map_err(|_| {
                        Error::catalog(
                            CatalogErrorKind::UndefinedColumn,
                            format!(
                                "column \"{c}\" of relation \"{}\" does not exist",
                                copy.table
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let builders = targets.iter().map(|_| StringBuilder::new()).collect();
        Ok(CopyIn {
            table_name: copy.table.clone(),
            table: Arc::new(table),
            schema,
            targets,
            format: copy.format.clone(),
            pending: Vec::new(),
            builders,
            rows_in_builders: 0,
            batches: Vec::new(),
            line: 0,
            header_skipped: false,
            finished: false,
            ctx: session.ctx.clone(),
        })
    }

    /// Number of columns the client sends per row.
    pub fn column_count(&self) -> usize {
        self.targets.len()
    }

    /// True when data is CSV (for the CopyInResponse format field).
    pub fn is_csv(&self) -> bool {
        self.format.csv
    }

    /// Takes the next chunk of COPY data.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        let Some(end) = self.complete_prefix() else {
            return Ok(());
        };
        let chunk: Vec<u8> = self.pending.drain(..end).collect();
        self.decode(&chunk)
    }

    /// Decodes what is left and appends every row to the table durably.
    pub async fn finish(mut self) -> Result<u64> {
        if !self.pending.is_empty() {
            let mut rest = std::mem::take(&mut self.pending);
            if rest.last() != Some(&b'\n') {
                rest.push(b'\n');
            }
            self.decode(&rest)?;
        }
        self.flush_builders()?;
        let batches = std::mem::take(&mut self.batches);
        self.table.0.append(batches).await
    }

    /// Length of the longest prefix of `pending` made of whole rows. In CSV a
    /// newline inside quotes does not end a row.
    fn complete_prefix(&self) -> Option<usize> {
        if !self.format.csv {
            return self
                .pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1);
        }
        let mut in_quotes = false;
        let mut last = None;
        for (i, &b) in self.pending.iter().enumerate() {
            if b == self.format.quote {
                in_quotes = !in_quotes;
            } else if b == b'\n' && !in_quotes {
                last = Some(i + 1);
            }
        }
        last
    }

    fn decode(&mut self, chunk: &[u8]) -> Result<()> {
        let mut fields: Vec<Option<String>> = Vec::with_capacity(self.targets.len());
        let mut start = 0;
        while start < chunk.len() {
            let end = if self.format.csv {
                csv_row_end(chunk, start, self.format.quote)
            } else {
                chunk[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|p| start + p)
                    .unwrap_or(chunk.len())
            };
            let mut row = &chunk[start..end];
            start = end + 1;
            if row.last() == Some(&b'\r') {
                row = &row[..row.len() - 1];
            }
            self.line += 1;
            if self.finished {
                continue;
            }
            if row == b"\\." {
                self.finished = true;
                continue;
            }
            if self.format.header && !self.header_skipped {
                self.header_skipped = true;
                continue;
            }
            fields.clear();
            if self.format.csv {
                split_csv(row, &self.format, &mut fields).map_err(|m| self.row_error(m))?;
            } else {
                split_text(row, &self.format, &mut fields).map_err(|m| self.row_error(m))?;
            }
            if fields.len() != self.targets.len() {
                let what = if fields.len() < self.targets.len() {
                    "missing data for a column"
                } else {
                    "extra data after last expected column"
                };
                return Err(self.row_error(what.to_string()));
            }
            for (builder, value) in self.builders.iter_mut().zip(fields.drain(..)) {
                builder.append_option(value);
            }
            self.rows_in_builders += 1;
            if self.rows_in_builders >= BATCH_ROWS {
                self.flush_builders()?;
            }
        }
        Ok(())
    }

    fn row_error(&self, message: String) -> Error {
        Error::data(
            "22P04",
            format!("COPY {}, line {}: {message}", self.table_name, self.line),
        )
    }

    /// Converts the gathered strings into a batch of the table's types.
    fn flush_builders(&mut self) -> Result<()> {
        let rows = self.rows_in_builders;
        if rows == 0 {
            return Ok(());
        }
        self.rows_in_builders = 0;
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        let cast_options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        for (builder, &target) in self.builders.iter_mut().zip(&self.targets) {
            let field = self.schema.field(target);
            let strings: ArrayRef = Arc::new(builder.finish());
            let array =
                cast_with_options(&strings, field.data_type(), &cast_options).map_err(|e| {
                    Error::data(
                        "22P02",
                        format!(
                            "COPY {}, column {}: invalid input for type {}: {e}",
                            self.table_name,
                            field.name(),
                            field.data_type()
                        ),
                    )
                })?;
            columns[target] = Some(array);
        }
        let mut arrays = Vec::with_capacity(columns.len());
        for (i, column) in columns.into_iter().enumerate() {
            let field = self.schema.field(i);
            let array = match column {
                Some(a) => a,
                None => match self.table.get_column_default(field.name()) {
                    Some(expr) => self.evaluate_default(expr, rows)?,
                    None => new_null_array(field.data_type(), rows),
                },
            };
            if !field.is_nullable() && array.null_count() > 0 {
                return Err(Error::data(
                    "23502",
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        field.name(),
                        self.table_name
                    ),
                ));
            }
            arrays.push(array);
        }
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), arrays)?);
        Ok(())
    }

    fn evaluate_default(&self, expr: &Expr, rows: usize) -> Result<ArrayRef> {
        let empty = DFSchema::empty();
        let physical = self.ctx.create_physical_expr(expr.clone(), &empty)?;
        let batch = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            vec![],
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok(physical.evaluate(&batch)?.into_array(rows)?)
    }
}

/// Splits a text-format row: delimiter-separated, `\N` (or the NULL option)
/// for NULL, backslash escapes.
fn split_text(
    row: &[u8],
    format: &CopyFormat,
    out: &mut Vec<Option<String>>,
) -> Result<(), String> {
    for raw in row.split(|&b| b == format.delimiter) {
        if raw == format.null.as_bytes() {
            out.push(None);
            continue;
        }
        out.push(Some(unescape_text(raw)?));
    }
    Ok(())
}

fn unescape_text(raw: &[u8]) -> Result<String, String> {
    if !raw.contains(&b'\\') {
        return String::from_utf8(raw.to_vec()).map_err(|_| "invalid UTF-8".to_string());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + (raw[i] - b'0') as u32;
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8".to_string())
}

/// End (exclusive) of the CSV row starting at `start`: the first newline
/// outside quotes, or the end of the chunk.
fn csv_row_end(chunk: &[u8], start: usize, quote: u8) -> usize {
    let mut in_quotes = false;
    for (i, &b) in chunk.iter().enumerate().skip(start) {
        if b == quote {
            in_quotes = !in_quotes;
        } else if b == b'\n' && !in_quotes {
            return i;
        }
    }
    chunk.len()
}

/// Splits a CSV row. An unquoted value equal to the NULL string (empty by
/// default) is NULL; a quoted empty value is an empty string.
fn split_csv(row: &[u8], format: &CopyFormat, out: &mut Vec<Option<String>>) -> Result<(), String> {
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut quoted = false;
        while i < row.len() && row[i] != format.delimiter {
            if row[i] == format.quote {
                quoted = true;
                i += 1;
                loop {
                    if i >= row.len() {
                        return Err("unterminated CSV quoted field".to_string());
                    }
                    let b = row[i];
                    if b == format.escape
                        && i + 1 < row.len()
                        && (row[i + 1] == format.quote || row[i + 1] == format.escape)
                        && (format.escape != format.quote || row[i + 1] == format.quote)
                    {
                        value.push(row[i + 1]);
                        i += 2;
                    } else if b == format.quote {
                        i += 1;
                        break;
                    } else {
                        value.push(b);
                        i += 1;
                    }
                }
            } else {
                value.push(row[i]);
                i += 1;
            }
        }
        let text = String::from_utf8(value).map_err(|_| "invalid UTF-8".to_string())?;
        out.push(if !quoted && text == format.null {
            None
        } else {
            Some(text)
        });
        if i >= row.len() {
            return Ok(());
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(row: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        split_csv(row.as_bytes(), &CopyFormat::csv(), &mut out).unwrap();
        out
    }

    #[test]
    fn csv_quotes_nulls_and_empty_strings() {
        assert_eq!(
            csv(r#"1,"a,b",,"","say ""hi""""#),
            vec![
                Some("1".into()),
                Some("a,b".into()),
                None,
                Some(String::new()),
                Some("say \"hi\"".into())
            ]
        );
    }

    #[test]
    fn text_escapes_and_nulls() {
        let mut out = Vec::new();
        split_text(b"1\t\\N\ta\\tb\\\\c\\101", &CopyFormat::text(), &mut out).unwrap();
        assert_eq!(out, vec![Some("1".into()), None, Some("a\tb\\cA".into())]);
    }

    #[test]
    fn csv_rows_may_span_lines_inside_quotes() {
        let chunk = b"1,\"x\ny\"\n2,z\n";
        assert_eq!(csv_row_end(chunk, 0, b'"'), 7);
    }
}
