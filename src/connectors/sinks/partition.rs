//! `partition_by`: SQL expressions over a sink's rows that name the
//! Hive-style directory each row is written under (`date=2026-11-21/`).
//!
//! The expressions are planned once, with DataFusion, as physical
//! expressions against the sink input's schema; per batch they are
//! evaluated, cast to text and escaped the way Hive escapes partition
//! values, so DuckDB, Spark and pyarrow read the directories back. This
//! file only splits batches; it writes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray, UInt32Array};
use datafusion::arrow::compute::{can_cast_types, cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;

use crate::connectors::invalid;
use crate::error::Result;

/// Hive's name for the directory of rows whose value is NULL or empty.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// One level of partition directories.
#[derive(Debug, Clone)]
pub struct PartitionColumn {
    /// The directory name's key: the alias, the column's or the function's
    /// name, or the expression text made safe.
    pub name: String,
    /// The expression as written.
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// Splits batches by their partition directory.
#[derive(Debug, Clone, Default)]
pub struct Partitioner {
    columns: Vec<PartitionColumn>,
}

impl Partitioner {
    /// No partitions: every row goes to the sink's own directory.
    pub fn none() -> Self {
        Partitioner::default()
    }

    /// Plans `text` (`expr [AS name], ...`) against `schema`. A name must
    /// not repeat a column of the rows (readers would see two columns of
    /// that name) nor another partition's.
    pub fn try_new(text: &str, schema: &SchemaRef, state: &SessionState) -> Result<Self> {
        let items = SqlParser::new(&PostgreSqlDialect {})
            .try_with_sql(text)?
            .parse_comma_separated(|p| p.parse_select_item())?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let mut columns: Vec<PartitionColumn> = Vec::new();
        for item in items {
            let (expr, alias) = match item {
                ast::SelectItem::UnnamedExpr(e) => (e, None),
                ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value)),
                other => {
                    return Err(invalid(format!(
                        "partition_by takes expressions over the rows, not {other}"
                    )));
                }
            };
            let sql = expr.to_string();
            let name = alias.unwrap_or_else(|| default_name(&expr));
            let expr = date_as_cast(expr);
            let logical = state.create_logical_expr(&expr.to_string(), &df_schema)?;
            let physical = state.create_physical_expr(logical, &df_schema)?;
            let data_type = physical.data_type(schema)?;
            if !can_cast_types(&data_type, &DataType::Utf8) || data_type.is_nested() {
                return Err(invalid(format!(
                    "partition_by expression {sql} is of type {data_type}, which cannot name a directory"
                )));
            }
            if schema.field_with_name(&name).is_ok() || columns.iter().any(|c| c.name == name) {
                return Err(invalid(format!(
                    "partition column \"{name}\" (from partition_by {sql}) has the name of a column \
                     already written; name it with AS, e.g. partition_by = '{sql} AS {name}_part'"
                )));
            }
            columns.push(PartitionColumn {
                name,
                sql,
                expr: physical,
            });
        }
        Ok(Partitioner { columns })
    }

    pub fn columns(&self) -> &[PartitionColumn] {
        &self.columns
    }

    /// The rows of `batch` grouped by directory (relative to the sink's
    /// path, `""` without partitions), in order of first appearance.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        if self.columns.is_empty() || batch.num_rows() == 0 {
            return Ok(vec![(String::new(), batch.clone())]);
        }
        let rows = batch.num_rows();
        let mut values = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let array = c.expr.evaluate(batch)?.into_array(rows)?;
            let text = cast(&array, &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| crate::internal!("a cast to Utf8 gave no StringArray"))?
                .clone();
            values.push(text);
        }
        let same_as_previous = |row: usize| {
            row > 0
                && values.iter().all(|v| {
                    v.is_null(row) == v.is_null(row - 1)
                        && (v.is_null(row) || v.value(row) == v.value(row - 1))
                })
        };
        let mut groups: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<(String, Vec<u32>)> = Vec::new();
        let mut current = 0;
        for row in 0..rows {
            if !same_as_previous(row) {
                let dir = self.dir_of(&values, row);
                current = match groups.get(&dir) {
                    Some(g) => *g,
                    None => {
                        groups.insert(dir.clone(), order.len());
                        order.push((dir, Vec::new()));
                        order.len() - 1
                    }
                };
            }
            order[current].1.push(row as u32);
        }
        if order.len() == 1 {
            let (dir, _) = order.pop().unwrap_or_default();
            return Ok(vec![(dir, batch.clone())]);
        }
        order
            .into_iter()
            .map(|(dir, rows)| Ok((dir, take_record_batch(batch, &UInt32Array::from(rows))?)))
            .collect()
    }

    fn dir_of(&self, values: &[StringArray], row: usize) -> String {
        self.columns
            .iter()
            .zip(values)
            .map(|(c, v)| {
                let value = if v.is_null(row) { "" } else { v.value(row) };
                format!("{}={}", escape(&c.name), escape_value(value))
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The name a partition gets without an alias.
fn default_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(i) => i.value.to_lowercase(),
        ast::Expr::CompoundIdentifier(parts) => parts
            .last()
            .map(|i| i.value.to_lowercase())
            .unwrap_or_default(),
        ast::Expr::Function(f) => f.name.to_string().to_lowercase(),
        other => {
            let text: String = other
                .to_string()
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let parts: Vec<&str> = text.split('_').filter(|p| !p.is_empty()).collect();
            parts.join("_")
        }
    }
}

/// PostgreSQL's `date(ts)` is a cast, which DataFusion spells `CAST(ts AS
/// DATE)`.
fn date_as_cast(expr: ast::Expr) -> ast::Expr {
    if let ast::Expr::Function(f) = &expr
        && f.name.to_string().eq_ignore_ascii_case("date")
        && let ast::FunctionArguments::List(list) = &f.args
        && let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] = list.args.as_slice()
    {
        return ast::Expr::Cast {
            kind: ast::CastKind::Cast,
            expr: Box::new(arg.clone()),
            data_type: ast::DataType::Date,
            array: false,
            format: None,
        };
    }
    expr
}

fn escape_value(value: &str) -> String {
    if value.is_empty() {
        NULL_PARTITION.to_string()
    } else {
        escape(value)
    }
}

/// Hive's escaping of path characters in partition names and values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || "\"#%'*/:=?\\{[]^".contains(c) || c == '\u{7f}' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("sensor_id", DataType::Int32, true),
        ]));
        let day = 86_400_000_000i64;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![0, 10, day, 20])),
                Arc::new(Int32Array::from(vec![Some(1), Some(2), Some(1), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_split_by_date_and_key_into_hive_directories() {
        let state = SessionContext::new().state();
        let b = batch();
        let p = Partitioner::try_new("date(window_start), sensor_id AS s", &b.schema(), &state)
            .unwrap();
        let names: Vec<&str> = p.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["date", "s"]);
        let parts = p.split(&b).unwrap();
        let dirs: Vec<(&str, usize)> = parts
            .iter()
            .map(|(d, b)| (d.as_str(), b.num_rows()))
            .collect();
        assert_eq!(
            dirs,
            [
                ("date=1970-01-01/s=1", 1),
                ("date=1970-01-01/s=2", 1),
                ("date=1970-01-02/s=1", 1),
                ("date=1970-01-01/s=__HIVE_DEFAULT_PARTITION__", 1),
            ]
        );
    }

    #[test]
    fn names_that_clash_and_nested_types_are_refused() {
        let state = SessionContext::new().state();
        let b = batch();
        let err = Partitioner::try_new("sensor_id", &b.schema(), &state).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(err.to_string().contains("AS sensor_id_part"), "{err}");
        assert!(Partitioner::try_new("make_array(sensor_id) AS a", &b.schema(), &state).is_err());
        assert!(Partitioner::try_new("nope(sensor_id)", &b.schema(), &state).is_err());
    }

    #[test]
    fn values_are_escaped_like_hive() {
        assert_eq!(escape("2026-11-21T10:00:00"), "2026-11-21T10%3A00%3A00");
        assert_eq!(escape("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(escape_value(""), NULL_PARTITION);
    }
}
