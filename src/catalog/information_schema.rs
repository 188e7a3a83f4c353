//! `InformationSchema`: the SQL-standard `information_schema` views
//! (`tables`, `columns`, `schemata`, `views`) over runnel's [`Catalog`] and
//! the system tables of `runnel_catalog`, and [`pg_type_names`], the one
//! Arrow → PostgreSQL type-name mapping.
//!
//! Every `table()` call reads the catalog afresh, so the views are always
//! current. This file must not create or drop objects, and must not pick type
//! OIDs: arrow-pg does that for the wire.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::system::{SYSTEM_SCHEMA, system_tables};
use super::{Catalog, DATABASE_NAME, SCHEMA_NAME};
use crate::sql::ObjectKind;

/// Arrow field metadata naming an extension type; runnel marks JSON columns
/// with [`JSON_EXTENSION`].
const EXTENSION_KEY: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";
/// Marks a JSON column declared `jsonb`.
const JSONB_KEY: &str = "pg.jsonb";

const OWNER: &str = "runnel";
const TABLES: [&str; 4] = ["columns", "schemata", "tables", "views"];

/// PostgreSQL's names for the type of `field`: `(udt_name, data_type)`, e.g.
/// `("int8", "bigint")`, `("timestamptz", "timestamp with time zone")`,
/// `("_int4", "ARRAY")`, spelled as PostgreSQL's information_schema does.
pub fn pg_type_names(field: &Field) -> (String, &'static str) {
    let udt = udt_name(field);
    let data_type = sql_type_name(&udt);
    (udt, data_type)
}

fn udt_name(field: &Field) -> String {
    if let Some(json) = json_name(field) {
        return json.to_string();
    }
    match field.data_type() {
        DataType::Struct(_) => return "record".to_string(),
        DataType::List(inner)
        | DataType::LargeList(inner)
        | DataType::FixedSizeList(inner, _)
        | DataType::ListView(inner)
        | DataType::LargeListView(inner) => {
            if let Some(json) = json_name(inner) {
                return format!("_{json}");
            }
            if matches!(inner.data_type(), DataType::Struct(_)) {
                return "_record".to_string();
            }
        }
        _ => {}
    }
    match arrow_pg::datatypes::field_into_pg_type(&Arc::new(field.clone())) {
        Ok(pg_type) => pg_type.name().to_string(),
        Err(_) => "unknown".to_string(),
    }
}

/// `json` or `jsonb` when runnel marked the field as JSON.
fn json_name(field: &Field) -> Option<&'static str> {
    let metadata = field.metadata();
    if metadata.get(EXTENSION_KEY).map(String::as_str) != Some(JSON_EXTENSION) {
        return None;
    }
    if metadata.get(JSONB_KEY).map(String::as_str) == Some("true") {
        Some("jsonb")
    } else {
        Some("json")
    }
}

/// The SQL-standard spelling of a PostgreSQL base type, from its udt name.
fn sql_type_name(udt: &str) -> &'static str {
    if udt.starts_with('_') {
        return "ARRAY";
    }
    match udt {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "numeric" => "numeric",
        "text" => "text",
        "varchar" => "character varying",
        "bpchar" => "character",
        "char" => "\"char\"",
        "name" => "name",
        "bytea" => "bytea",
        "date" => "date",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "interval" => "interval",
        "json" => "json",
        "jsonb" => "jsonb",
        "uuid" => "uuid",
        "oid" => "oid",
        "regclass" => "regclass",
        "regtype" => "regtype",
        "regproc" => "regproc",
        "regnamespace" => "regnamespace",
        "unknown" => "unknown",
        _ => "USER-DEFINED",
    }
}

/// `(numeric_precision, numeric_precision_radix, numeric_scale,
/// datetime_precision)` as PostgreSQL reports them for this Arrow type.
fn precision(data_type: &DataType) -> [Option<i32>; 4] {
    let micros = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        // PostgreSQL keeps microseconds; nanoseconds are sent truncated.
        TimeUnit::Microsecond | TimeUnit::Nanosecond => 6,
    };
    match data_type {
        DataType::Dictionary(_, value) => precision(value),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => [Some(16), Some(2), Some(0), None],
        DataType::Int32 | DataType::UInt16 => [Some(32), Some(2), Some(0), None],
        DataType::Int64 | DataType::UInt32 => [Some(64), Some(2), Some(0), None],
        DataType::Float16 | DataType::Float32 => [Some(24), Some(2), None, None],
        DataType::Float64 => [Some(53), Some(2), None, None],
        DataType::Decimal128(p, s) => [Some(*p as i32), Some(10), Some(*s as i32), None],
        DataType::UInt64 => [None, Some(10), None, None],
        DataType::Date32 | DataType::Date64 => [None, None, None, Some(0)],
        DataType::Time32(unit) | DataType::Time64(unit) | DataType::Timestamp(unit, _) => {
            [None, None, None, Some(micros(unit))]
        }
        DataType::Interval(_) | DataType::Duration(_) => [None, None, None, Some(6)],
        _ => [None, None, None, None],
    }
}

/// The `information_schema` of catalog `runnel`, listing the objects of
/// schema `public` and the system tables of `runnel_catalog`.
#[derive(Debug)]
pub struct InformationSchema {
    catalog: Arc<Catalog>,
}

impl InformationSchema {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        InformationSchema { catalog }
    }

    fn tables(&self) -> DfResult<RecordBatch> {
        // (schema, name, table_type, is_insertable_into)
        let mut rows: Vec<(&str, String, &str, &str)> = Vec::new();
        for entry in self.catalog.entries() {
            let table_type = match entry.def.kind {
                ObjectKind::Table => "BASE TABLE",
                ObjectKind::View => "VIEW",
                ObjectKind::MaterializedView => "MATERIALIZED VIEW",
                // Both are relkind 'f' (see pg_catalog.rs), which PostgreSQL
                // reports as FOREIGN; runnel_catalog.sources lists sources.
                ObjectKind::Source | ObjectKind::Sink => "FOREIGN",
            };
            let insertable = match entry.def.kind {
                ObjectKind::Table => "YES",
                _ => "NO",
            };
            rows.push((SCHEMA_NAME, entry.def.name, table_type, insertable));
        }
        for (name, _) in system_tables() {
            rows.push((SYSTEM_SCHEMA, name.to_string(), "BASE TABLE", "NO"));
        }
        batch(
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "table_type",
                "is_insertable_into",
            ],
            &[],
            vec![
                texts(rows.iter().map(|_| Some(DATABASE_NAME))),
                texts(rows.iter().map(|r| Some(r.0))),
                texts(rows.iter().map(|r| Some(r.1.as_str()))),
                texts(rows.iter().map(|r| Some(r.2))),
                texts(rows.iter().map(|r| Some(r.3))),
            ],
        )
    }

    fn columns(&self) -> DfResult<RecordBatch> {
        // (table, ordinal, field, default), and each row's schema.
        let mut rows = Vec::new();
        let mut schemas = Vec::new();
        for entry in self.catalog.entries() {
            let schema = entry.provider.schema();
            for (i, field) in schema.fields().iter().enumerate() {
                let default = entry
                    .provider
                    .get_column_default(field.name())
                    .and_then(|e| datafusion::sql::unparser::expr_to_sql(e).ok())
                    .map(|e| e.to_string());
                rows.push((entry.def.name.clone(), i as i32 + 1, field.clone(), default));
                schemas.push(SCHEMA_NAME);
            }
        }
        for (name, schema) in system_tables() {
            for (i, field) in schema.fields().iter().enumerate() {
                rows.push((name.to_string(), i as i32 + 1, field.clone(), None));
                schemas.push(SYSTEM_SCHEMA);
            }
        }
        let names: Vec<(String, &'static str)> =
            rows.iter().map(|(_, _, f, _)| pg_type_names(f)).collect();
        let precisions: Vec<[Option<i32>; 4]> = rows
            .iter()
            .map(|(_, _, f, _)| precision(f.data_type()))
            .collect();
        let nullable = |f: &Field| if f.is_nullable() { "YES" } else { "NO" };
        let ints = |k: usize| -> ArrayRef {
            Arc::new(precisions.iter().map(|p| p[k]).collect::<Int32Array>())
        };
        batch(
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
                "ordinal_position",
                "column_default",
                "is_nullable",
                "data_type",
                "character_maximum_length",
                "numeric_precision",
                "numeric_precision_radix",
                "numeric_scale",
                "datetime_precision",
                "udt_schema",
                "udt_name",
            ],
            &["ordinal_position"],
            vec![
                texts(rows.iter().map(|_| Some(DATABASE_NAME))),
                texts(schemas.iter().map(|s| Some(*s))),
                texts(rows.iter().map(|(t, ..)| Some(t.as_str()))),
                texts(rows.iter().map(|(_, _, f, _)| Some(f.name().as_str()))),
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<Int32Array>()),
                texts(rows.iter().map(|(.., d)| d.as_deref())),
                texts(rows.iter().map(|(_, _, f, _)| Some(nullable(f)))),
                texts(names.iter().map(|(_, sql)| Some(*sql))),
                Arc::new(Int32Array::new_null(rows.len())),
                ints(0),
                ints(1),
                ints(2),
                ints(3),
                texts(rows.iter().map(|_| Some("pg_catalog"))),
                texts(names.iter().map(|(udt, _)| Some(udt.as_str()))),
            ],
        )
    }

    fn schemata(&self) -> DfResult<RecordBatch> {
        let schemas = [
            "information_schema",
            "pg_catalog",
            SCHEMA_NAME,
            SYSTEM_SCHEMA,
        ];
        batch(
            &["catalog_name", "schema_name", "schema_owner"],
            &[],
            vec![
                texts(schemas.iter().map(|_| Some(DATABASE_NAME))),
                texts(schemas.iter().map(|s| Some(*s))),
                texts(schemas.iter().map(|_| Some(OWNER))),
            ],
        )
    }

    fn views(&self) -> DfResult<RecordBatch> {
        let views: Vec<(String, String)> = self
            .catalog
            .entries()
            .into_iter()
            .filter(|e| e.def.kind == ObjectKind::View)
            .map(|e| (e.def.name, view_query(&e.def.sql)))
            .collect();
        batch(
            &[
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
            ],
            &[],
            vec![
                texts(views.iter().map(|_| Some(DATABASE_NAME))),
                texts(views.iter().map(|_| Some(SCHEMA_NAME))),
                texts(views.iter().map(|(n, _)| Some(n.as_str()))),
                texts(views.iter().map(|(_, q)| Some(q.as_str()))),
            ],
        )
    }
}

/// The SELECT of a CREATE VIEW statement, as PostgreSQL's
/// `view_definition` shows it; the whole statement if it does not parse.
pub(crate) fn view_query(sql: &str) -> String {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).as_deref() {
        Ok([ast::Statement::CreateView(view)]) => view.query.to_string(),
        _ => sql.to_string(),
    }
}

fn texts<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// A batch whose columns are all nullable except `required`.
fn batch(names: &[&str], required: &[&str], columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    let fields: Vec<Field> = names
        .iter()
        .zip(&columns)
        .map(|(name, column)| {
            Field::new(*name, column.data_type().clone(), !required.contains(name))
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let rows = match name.to_ascii_lowercase().as_str() {
            "tables" => self.tables()?,
            "columns" => self.columns()?,
            "schemata" => self.schemata()?,
            "views" => self.views()?,
            _ => return Ok(None),
        };
        let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::catalog::pg_catalog::tests::{catalog_with, context, query};

    fn json_field(name: &str, jsonb: bool) -> Field {
        let mut metadata = HashMap::from([(EXTENSION_KEY.to_string(), JSON_EXTENSION.to_string())]);
        if jsonb {
            metadata.insert(JSONB_KEY.to_string(), "true".to_string());
        }
        Field::new(name, DataType::Utf8, true).with_metadata(metadata)
    }

    #[test]
    fn type_names() {
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        let cases = [
            (DataType::Int64, "int8", "bigint"),
            (DataType::Int32, "int4", "integer"),
            (DataType::Int16, "int2", "smallint"),
            (DataType::Float32, "float4", "real"),
            (DataType::Float64, "float8", "double precision"),
            (DataType::Decimal128(10, 2), "numeric", "numeric"),
            (DataType::Boolean, "bool", "boolean"),
            (DataType::Utf8, "text", "text"),
            (DataType::Utf8View, "text", "text"),
            (DataType::Binary, "bytea", "bytea"),
            (DataType::Date32, "date", "date"),
            (
                DataType::Time64(TimeUnit::Microsecond),
                "time",
                "time without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp",
                "timestamp without time zone",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                "timestamptz",
                "timestamp with time zone",
            ),
            (
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
                "interval",
                "interval",
            ),
            (list(DataType::Int32), "_int4", "ARRAY"),
            (list(DataType::Utf8), "_text", "ARRAY"),
        ];
        for (data_type, udt, sql) in cases {
            let field = Field::new("c", data_type.clone(), true);
            assert_eq!(pg_type_names(&field), (udt.to_string(), sql), "{data_type}");
        }
        assert_eq!(
            pg_type_names(&json_field("j", false)),
            ("json".to_string(), "json")
        );
        assert_eq!(
            pg_type_names(&json_field("j", true)),
            ("jsonb".to_string(), "jsonb")
        );
        let json_list = DataType::List(Arc::new(json_field("item", true)));
        assert_eq!(
            pg_type_names(&Field::new("c", json_list, true)),
            ("_jsonb".to_string(), "ARRAY")
        );
    }

    #[tokio::test]
    async fn tables_lists_every_kind() {
        let s: SchemaRef = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let (_dir, catalog) = catalog_with(&[
            (
                "t",
                ObjectKind::Table,
                "CREATE TABLE t (x BIGINT)",
                s.clone(),
            ),
            (
                "v",
                ObjectKind::View,
                "CREATE VIEW v AS SELECT x FROM t WHERE x > 1",
                s.clone(),
            ),
            (
                "m",
                ObjectKind::MaterializedView,
                "CREATE MATERIALIZED VIEW m AS SELECT x FROM t",
                s.clone(),
            ),
            ("src", ObjectKind::Source, "CREATE SOURCE src", s.clone()),
            ("snk", ObjectKind::Sink, "CREATE SINK snk", s),
        ]);
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            "SELECT table_catalog, table_schema, table_name, table_type \
             FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
        )
        .await;
        let want = "\
+---------------+--------------+------------+-------------------+
| table_catalog | table_schema | table_name | table_type        |
+---------------+--------------+------------+-------------------+
| runnel        | public       | m          | MATERIALIZED VIEW |
| runnel        | public       | snk        | FOREIGN           |
| runnel        | public       | src        | FOREIGN           |
| runnel        | public       | t          | BASE TABLE        |
| runnel        | public       | v          | VIEW              |
+---------------+--------------+------------+-------------------+";
        assert_eq!(got, want);

        let got = query(
            &ctx,
            "SELECT table_name, view_definition FROM information_schema.views",
        )
        .await;
        assert!(
            got.contains("| v          | SELECT x FROM t WHERE x > 1 |"),
            "{got}"
        );

        let got = query(
            &ctx,
            "SELECT schema_name, schema_owner FROM information_schema.schemata ORDER BY 1",
        )
        .await;
        assert!(
            got.contains("| public             | runnel       |"),
            "{got}"
        );
        assert!(got.contains("| pg_catalog "), "{got}");
        assert!(got.contains("| runnel_catalog "), "{got}");

        let got = query(
            &ctx,
            "SELECT t.table_name, t.table_type, count(*) AS columns \
             FROM information_schema.tables t JOIN information_schema.columns c \
             ON c.table_schema = t.table_schema AND c.table_name = t.table_name \
             WHERE t.table_schema = 'runnel_catalog' GROUP BY 1, 2 ORDER BY 1",
        )
        .await;
        let want = "\
+--------------------+------------+---------+
| table_name         | table_type | columns |
+--------------------+------------+---------+
| checkpoints        | BASE TABLE | 7       |
| materialized_views | BASE TABLE | 12      |
| sinks              | BASE TABLE | 16      |
| source_errors      | BASE TABLE | 7       |
| sources            | BASE TABLE | 15      |
+--------------------+------------+---------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn columns_use_postgres_type_names() {
        let s: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            json_field("doc", true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
        ]));
        let (_dir, catalog) = catalog_with(&[("t", ObjectKind::Table, "CREATE TABLE t (...)", s)]);
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            "SELECT column_name, ordinal_position, is_nullable, data_type, udt_name, \
             numeric_precision, numeric_scale, datetime_precision \
             FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position",
        )
        .await;
        let want = "\
+-------------+------------------+-------------+--------------------------+-------------+-------------------+---------------+--------------------+
| column_name | ordinal_position | is_nullable | data_type                | udt_name    | numeric_precision | numeric_scale | datetime_precision |
+-------------+------------------+-------------+--------------------------+-------------+-------------------+---------------+--------------------+
| id          | 1                | NO          | bigint                   | int8        | 64                | 0             |                    |
| price       | 2                | YES         | numeric                  | numeric     | 10                | 2             |                    |
| at          | 3                | YES         | timestamp with time zone | timestamptz |                   |               | 6                  |
| doc         | 4                | YES         | jsonb                    | jsonb       |                   |               |                    |
| tags        | 5                | YES         | ARRAY                    | _int4       |                   |               |                    |
+-------------+------------------+-------------+--------------------------+-------------+-------------------+---------------+--------------------+";
        assert_eq!(got, want);
    }
}
