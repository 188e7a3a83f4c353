//! Sources as PostgreSQL foreign tables, for psql's `\d name`, `\des` and
//! `\dE`: `pg_foreign_table` (one row per source, its options in
//! `ftoptions`), `pg_foreign_server` (one server per connector),
//! `pg_foreign_data_wrapper` (one wrapper, `runnel`), `pg_attribute` with
//! per-column options in `attfdwoptions`, and the functions psql's queries
//! call on them (`quote_literal`, and `runnel_foreign_kind`, which the
//! parser's rewrite of psql's relkind CASE calls).
//!
//! Options are `name=value` strings in `text[]`, as in PostgreSQL; psql reads
//! them through `pg_options_to_table`, which `src/sql/rewrite.rs` turns into
//! a map over the array. This file only reads the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};

use super::pg_catalog::{Names, int_column, namespaces_named, string_column};
use super::system::{ComputedTable, sources};
use super::{Catalog, SCHEMA_NAME};
use crate::connectors::{CONNECTORS, Format, SourceSpec};
use crate::sql::ObjectKind;

/// The foreign-data wrapper every runnel server belongs to. Server and
/// wrapper OIDs sit below the range datafusion-pg-catalog hands out (16384
/// and up), so they never name a relation.
const FDW_OID: i32 = 13000;
const FDW_NAME: &str = "runnel";
/// `pg_foreign_server.oid` of `CONNECTORS[i]` is `SERVER_OID_BASE + i`.
const SERVER_OID_BASE: i32 = 13001;
/// PostgreSQL's bootstrap superuser; `pg_get_userbyid` names it `runnel`.
const OWNER_OID: i32 = 10;

/// `text[]`, the type of every options column.
fn options_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn options_array(rows: impl IntoIterator<Item = Option<Vec<String>>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for row in rows {
        match row {
            Some(options) => {
                for option in options {
                    builder.values().append_value(option);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

/// Every server: the source connectors, then the sink connectors.
fn servers() -> impl Iterator<Item = &'static str> {
    CONNECTORS
        .iter()
        .chain(crate::connectors::sinks::SINK_CONNECTORS)
        .copied()
}

/// The server a connector's sources (or sinks) belong to.
fn server_oid(connector: &str) -> Option<i32> {
    servers()
        .position(|c| c == connector)
        .map(|i| SERVER_OID_BASE + i as i32)
}

/// A source's `ftoptions`: the connector, the WITH options as written, then
/// what other clauses said (format, CSV settings, watermark).
fn table_options(spec: &SourceSpec) -> Vec<String> {
    let mut options = vec![format!("connector={}", spec.connector)];
    for (key, value) in &spec.options {
        if !key.eq_ignore_ascii_case("connector") {
            options.push(format!("{key}={value}"));
        }
    }
    let given = |key: &str| spec.options.contains_key(key);
    if let Some(format) = &spec.format
        && !given("format")
    {
        options.push(format!("format={}", format.name()));
    }
    if let Some(Format::Csv {
        delimiter,
        quote,
        header,
    }) = &spec.format
    {
        for (key, value) in [
            ("csv.delimiter", (*delimiter as char).to_string()),
            ("csv.quote", (*quote as char).to_string()),
            ("csv.header", header.to_string()),
        ] {
            if !given(key) {
                options.push(format!("{key}={value}"));
            }
        }
    }
    if let Some(et) = &spec.event_time {
        options.push(format!("watermark={}", et.sql));
    }
    options
}

/// A source column's `attfdwoptions`: the watermark on the event-time
/// column, the metadata kind on INCLUDE columns.
fn column_options(spec: &SourceSpec, column: &str) -> Option<Vec<String>> {
    if let Some(et) = spec.event_time.as_ref().filter(|et| et.column == column) {
        return Some(vec![format!("watermark={}", et.sql)]);
    }
    spec.metadata
        .iter()
        .find(|m| m.name == column)
        .map(|m| vec![format!("metadata={}", m.kind)])
}

/// OID → name of every `public` relation in a `pg_class` scan.
fn public_relations(
    classes: &RecordBatch,
    namespaces: &RecordBatch,
) -> DfResult<HashMap<i32, String>> {
    let public = namespaces_named(std::slice::from_ref(namespaces), SCHEMA_NAME)?;
    let oids = int_column(classes, "oid")?;
    let names = string_column(classes, "relname")?;
    let spaces = int_column(classes, "relnamespace")?;
    Ok((0..classes.num_rows())
        .filter(|&i| public.contains(&spaces.value(i)))
        .map(|i| (oids.value(i), names.value(i).to_string()))
        .collect())
}

/// The sources of `catalog` by relation OID, from a `pg_class` scan.
fn sources_by_oid(
    catalog: &Catalog,
    classes: &RecordBatch,
    namespaces: &RecordBatch,
) -> DfResult<Vec<(i32, Arc<SourceSpec>)>> {
    let by_name: HashMap<String, Arc<SourceSpec>> = sources(catalog)
        .into_iter()
        .map(|(e, runtime)| (e.def.name, runtime.spec.clone()))
        .collect();
    let mut found: Vec<(i32, Arc<SourceSpec>)> = public_relations(classes, namespaces)?
        .into_iter()
        .filter_map(|(oid, name)| Some((oid, by_name.get(&name)?.clone())))
        .collect();
    found.sort_by_key(|(oid, _)| *oid);
    Ok(found)
}

/// The sinks of `catalog` by relation OID: (oid, `ftoptions`).
fn sinks_by_oid(
    catalog: &Catalog,
    classes: &RecordBatch,
    namespaces: &RecordBatch,
) -> DfResult<Vec<(i32, Vec<String>)>> {
    let by_name: HashMap<String, Vec<String>> = super::system::sinks(catalog)
        .into_iter()
        .map(|s| {
            let options = s.spec.options.iter().map(|(k, v)| format!("{k}={v}"));
            (s.spec.name.clone(), options.collect())
        })
        .collect();
    let mut found: Vec<(i32, Vec<String>)> = public_relations(classes, namespaces)?
        .into_iter()
        .filter_map(|(oid, name)| Some((oid, by_name.get(&name)?.clone())))
        .collect();
    found.sort_by_key(|(oid, _)| *oid);
    Ok(found)
}

/// `pg_foreign_table`: one row per source and per sink.
pub(super) fn foreign_tables(
    catalog: Arc<Catalog>,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
) -> ComputedTable {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        oid_field("ftrelid", kind::REGCLASS, false),
        oid_field("ftserver", kind::OID, false),
        Field::new("ftoptions", options_type(), true),
    ]));
    let out = schema.clone();
    ComputedTable::new(
        schema,
        vec![classes, namespaces],
        Arc::new(move |inputs| {
            let mut found: Vec<(i32, Option<i32>, Vec<String>)> =
                sources_by_oid(&catalog, &inputs[0], &inputs[1])?
                    .into_iter()
                    .map(|(oid, spec)| (oid, server_oid(&spec.connector), table_options(&spec)))
                    .collect();
            found.extend(
                sinks_by_oid(&catalog, &inputs[0], &inputs[1])?
                    .into_iter()
                    .map(|(oid, options)| (oid, server_oid("parquet"), options)),
            );
            let columns: Vec<ArrayRef> = vec![
                Arc::new(found.iter().map(|(oid, _, _)| *oid).collect::<Int32Array>()),
                Arc::new(
                    found
                        .iter()
                        .map(|(_, server, _)| *server)
                        .collect::<Int32Array>(),
                ),
                options_array(found.into_iter().map(|(_, _, options)| Some(options))),
            ];
            Ok(RecordBatch::try_new(out.clone(), columns)?)
        }),
    )
}

/// `pg_foreign_server`: one server per connector, named after it.
pub(super) fn foreign_servers() -> ComputedTable {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("srvname", DataType::Utf8, false),
        oid_field("srvowner", kind::OID, false),
        oid_field("srvfdw", kind::OID, false),
        Field::new("srvtype", DataType::Utf8, true),
        Field::new("srvversion", DataType::Utf8, true),
        Field::new("srvacl", options_type(), true),
        Field::new("srvoptions", options_type(), true),
    ]));
    let out = schema.clone();
    ComputedTable::new(
        schema,
        Vec::new(),
        Arc::new(move |_| {
            let n = servers().count();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(
                    (0..n)
                        .map(|i| SERVER_OID_BASE + i as i32)
                        .collect::<Int32Array>(),
                ),
                Arc::new(StringArray::from_iter_values(servers())),
                Arc::new(Int32Array::from(vec![OWNER_OID; n])),
                Arc::new(Int32Array::from(vec![FDW_OID; n])),
                Arc::new(StringArray::new_null(n)),
                Arc::new(StringArray::new_null(n)),
                options_array((0..n).map(|_| None)),
                options_array((0..n).map(|_| None)),
            ];
            Ok(RecordBatch::try_new(out.clone(), columns)?)
        }),
    )
}

/// `pg_foreign_data_wrapper`: the one wrapper, `runnel`.
pub(super) fn foreign_data_wrappers() -> ComputedTable {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        oid_field("oid", kind::OID, false),
        Field::new("fdwname", DataType::Utf8, false),
        oid_field("fdwowner", kind::OID, false),
        oid_field("fdwhandler", kind::REGPROC, false),
        oid_field("fdwvalidator", kind::REGPROC, false),
        Field::new("fdwacl", options_type(), true),
        Field::new("fdwoptions", options_type(), true),
    ]));
    let out = schema.clone();
    ComputedTable::new(
        schema,
        Vec::new(),
        Arc::new(move |_| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int32Array::from(vec![FDW_OID])),
                Arc::new(StringArray::from(vec![FDW_NAME])),
                Arc::new(Int32Array::from(vec![OWNER_OID])),
                Arc::new(Int32Array::from(vec![0])),
                Arc::new(Int32Array::from(vec![0])),
                options_array([None]),
                options_array([None]),
            ];
            Ok(RecordBatch::try_new(out.clone(), columns)?)
        }),
    )
}

/// `pg_attribute` with `attfdwoptions` as `text[]` (datafusion-pg-catalog
/// types it text and leaves it NULL), filled in for source columns.
pub(super) fn attributes(
    catalog: Arc<Catalog>,
    attributes: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
) -> DfResult<ComputedTable> {
    let inner = attributes.schema();
    let index = inner.index_of("attfdwoptions")?;
    let mut fields: Vec<Field> = inner.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[index] = Field::new("attfdwoptions", options_type(), true);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, inner.metadata().clone()));
    let out = schema.clone();
    Ok(ComputedTable::new(
        schema,
        vec![attributes, classes, namespaces],
        Arc::new(move |inputs| {
            let [attributes, classes, namespaces] = inputs else {
                return Err(datafusion::error::DataFusionError::Internal(
                    "pg_attribute reads three tables".into(),
                ));
            };
            let specs: HashMap<i32, Arc<SourceSpec>> =
                sources_by_oid(&catalog, classes, namespaces)?
                    .into_iter()
                    .collect();
            let relations = int_column(attributes, "attrelid")?;
            let names = string_column(attributes, "attname")?;
            let options = (0..attributes.num_rows()).map(|i| {
                let spec = specs.get(&relations.value(i))?;
                column_options(spec, names.value(i))
            });
            let mut columns = attributes.columns().to_vec();
            columns[index] = options_array(options);
            Ok(RecordBatch::try_new(out.clone(), columns)?)
        }),
    ))
}

/// `runnel_foreign_kind(oid)`: what a relation psql would call a "foreign
/// table" is in runnel (`source`, `sink`), answered from the catalog for the
/// `public` relations of the last `pg_class` scan.
pub(super) fn foreign_kind_udf(names: Names, catalog: Arc<Catalog>) -> ScalarUDF {
    create_udf(
        "runnel_foreign_kind",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = names.read().map_err(|_| {
                datafusion::error::DataFusionError::Internal("names lock poisoned".into())
            })?;
            let kind = |oid: Option<i32>| -> Option<&'static str> {
                let oid = oid?;
                let kind = names
                    .get(&oid)
                    .and_then(|name| catalog.get(name))
                    .map(|e| e.def.kind);
                Some(match kind {
                    Some(ObjectKind::Source) => "source",
                    Some(ObjectKind::Sink) => "sink",
                    _ => "foreign table",
                })
            };
            super::pg_catalog::map_oids(&args[0], |oids| {
                Arc::new(oids.iter().map(kind).collect::<StringArray>())
            })
        }),
    )
}

/// `quote_literal(text)` as PostgreSQL writes it: single quotes doubled, and
/// with backslashes doubled behind an `E` prefix when there are any.
pub(super) fn quote_literal_udf() -> ScalarUDF {
    create_udf(
        "quote_literal",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let quote = |s: &str| {
                let body = s.replace('\'', "''");
                if s.contains('\\') {
                    format!("E'{}'", body.replace('\\', "\\\\"))
                } else {
                    format!("'{body}'")
                }
            };
            Ok(match &args[0] {
                ColumnarValue::Scalar(v) => ColumnarValue::Scalar(ScalarValue::Utf8(match v {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.as_deref().map(quote)
                    }
                    _ => None,
                })),
                ColumnarValue::Array(a) => {
                    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                    let a = a.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal(
                            "quote_literal of a non-text array".into(),
                        )
                    })?;
                    ColumnarValue::Array(Arc::new(
                        a.iter().map(|s| s.map(quote)).collect::<StringArray>(),
                    ))
                }
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_literal_like_postgres() {
        let udf = quote_literal_udf();
        let args = datafusion::logical_expr::ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(Arc::new(StringArray::from(vec![
                Some("a"),
                Some("it's"),
                Some("c:\\dir"),
                None,
            ])))],
            arg_fields: vec![Arc::new(Field::new("a", DataType::Utf8, true))],
            number_rows: 4,
            return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
            config_options: Arc::new(Default::default()),
        };
        let ColumnarValue::Array(out) = udf.invoke_with_args(args).unwrap() else {
            panic!("an array in gives an array out")
        };
        let out = out.as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(
            got,
            vec![Some("'a'"), Some("'it''s'"), Some("E'c:\\\\dir'"), None]
        );
    }

    #[test]
    fn options_arrays_keep_nulls_apart_from_empty() {
        let a = options_array([Some(vec!["a=b".to_string()]), None, Some(Vec::new())]);
        assert_eq!(a.len(), 3);
        assert!(a.is_valid(0) && a.is_null(1) && a.is_valid(2));
    }
}
