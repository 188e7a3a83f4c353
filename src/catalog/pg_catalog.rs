//! `RunnelPgCatalog`: the `pg_catalog` schema clients query, built by
//! `datafusion-pg-catalog` and wrapped so that `pg_class.relkind` tells every
//! runnel object kind apart (the crate only knows tables and views).
//!
//! This file owns the wrapper, the relkind chosen for each [`ObjectKind`] and
//! the `pg_get_userbyid` owner name. It must not copy or reimplement the other
//! pg_catalog tables: they are delegated to the crate untouched, except the
//! ones that describe sources as foreign tables (`pg_foreign.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use super::system::{ComputedTable, SYSTEM_SCHEMA};
use super::{Catalog, DATABASE_NAME, SCHEMA_NAME, pg_foreign};
use crate::error::{Error, Result};
use crate::sql::ObjectKind;

/// The one role runnel has; it owns every object.
const OWNER: &str = "runnel";

/// The `pg_class.relkind` of each runnel object kind.
///
/// psql's `\d` lists only relkinds in `('r','p','v','m','S','f','')` and
/// names them with a fixed CASE, so a private letter (RisingWave uses 's'
/// and 'k') hides the object from `\d` and titles `\d name` "?k?". Runnel
/// objects share one relation namespace (CREATE of any kind fails with
/// 42P07 when the name is taken), so every kind must be findable with `\d`:
/// - Source → 'f' (foreign table): its rows live in an external system and
///   are read through a connector, which is what a PostgreSQL foreign table
///   is; `\dE` lists sources.
/// - Sink → 'f' as well: the PostgreSQL relation whose rows are moved to an
///   external system by a wrapper is again the foreign table (postgres_fdw
///   tables accept INSERT). Sources and sinks therefore both read "foreign
///   table" to psql, which titles `\d name` "Foreign table" from the
///   relkind alone. The parser rewrites psql's relkind CASE so that the
///   Type column of `\d` says `source` or `sink`, decided by OID
///   (`runnel_foreign_kind`, src/catalog/pg_foreign.rs);
///   `runnel_catalog.sources` and SHOW SOURCES / SHOW SINKS list each kind.
pub fn relkind(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Table => "r",
        ObjectKind::View => "v",
        ObjectKind::MaterializedView => "m",
        ObjectKind::Source | ObjectKind::Sink => "f",
    }
}

/// The `pg_catalog` schema of catalog `runnel`: `pg_class` is patched from
/// the [`Catalog`], every other table comes from `datafusion-pg-catalog`.
#[derive(Debug)]
pub struct RunnelPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
    hidden: Hidden,
    names: Names,
}

/// OIDs of relations outside the search path (`information_schema`,
/// `runnel_catalog`), as of the last `pg_class` scan. `pg_table_is_visible`
/// answers from it; the queries that call it take their OIDs from that same
/// scan.
type Hidden = Arc<std::sync::RwLock<HashSet<i32>>>;

/// Names of the `public` relations by OID, as of the last `pg_class` scan,
/// for `pg_get_viewdef(oid)` (whose callers take the OID from that scan).
pub(super) type Names = Arc<std::sync::RwLock<HashMap<i32, String>>>;

impl RunnelPgCatalog {
    /// Registers `pg_catalog` and the PostgreSQL functions on `ctx`, then
    /// replaces the schema with the wrapper. Call after the `public` schema
    /// is registered.
    pub fn install(ctx: &SessionContext, catalog: Arc<Catalog>) -> Result<()> {
        setup_pg_catalog(ctx, DATABASE_NAME, RunnelRoles).map_err(|e| Error::from(*e))?;
        let db = ctx
            .catalog(DATABASE_NAME)
            .ok_or_else(|| crate::internal!("catalog {DATABASE_NAME} missing"))?;
        let inner = db
            .schema("pg_catalog")
            .ok_or_else(|| crate::internal!("pg_catalog was not registered"))?;
        let hidden = Hidden::default();
        let names = Names::default();
        ctx.register_udf(visibility_udf(hidden.clone()));
        ctx.register_udf(pg_foreign::foreign_kind_udf(names.clone(), catalog.clone()));
        ctx.register_udf(pg_foreign::quote_literal_udf());
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
            ViewDef {
                names: names.clone(),
                catalog: catalog.clone(),
                signature: datafusion::logical_expr::Signature::one_of(
                    vec![
                        datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Int32]),
                        datafusion::logical_expr::TypeSignature::Exact(vec![
                            DataType::Int32,
                            DataType::Boolean,
                        ]),
                    ],
                    Volatility::Stable,
                ),
            },
        ));
        db.register_schema(
            "pg_catalog",
            Arc::new(RunnelPgCatalog {
                inner,
                catalog,
                hidden,
                names,
            }),
        )?;
        ctx.register_udf(owner_udf());
        Ok(())
    }

    /// A table of the crate's pg_catalog, unpatched.
    async fn inner_table(&self, name: &str) -> DfResult<Arc<dyn TableProvider>> {
        self.inner
            .table(name)
            .await?
            .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog has no {name}")))
    }
}

#[async_trait]
impl SchemaProvider for RunnelPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let catalog = self.catalog.clone();
        let patched: Arc<dyn TableProvider> = match name.to_ascii_lowercase().as_str() {
            "pg_class" => Arc::new(pg_class(
                table,
                self.inner_table("pg_namespace").await?,
                catalog,
                self.hidden.clone(),
                self.names.clone(),
            )),
            "pg_attribute" => Arc::new(pg_foreign::attributes(
                catalog,
                table,
                self.inner_table("pg_class").await?,
                self.inner_table("pg_namespace").await?,
            )?),
            "pg_foreign_table" => Arc::new(pg_foreign::foreign_tables(
                catalog,
                self.inner_table("pg_class").await?,
                self.inner_table("pg_namespace").await?,
            )),
            "pg_foreign_server" => Arc::new(pg_foreign::foreign_servers()),
            "pg_foreign_data_wrapper" => Arc::new(pg_foreign::foreign_data_wrappers()),
            _ => table,
        };
        Ok(Some(patched))
    }

    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        self.inner.table_type(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `pg_class` with the relkind of each runnel object set from the catalog
/// and a `reloptions` column. The rows are produced, and patched, when the
/// query runs, so they are current for every query; producing them also
/// refreshes which oids are hidden from `pg_table_is_visible` and the names
/// `runnel_foreign_kind` resolves.
fn pg_class(
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    catalog: Arc<Catalog>,
    hidden: Hidden,
    names: Names,
) -> ComputedTable {
    let schema = with_reloptions(&classes.schema());
    let output = schema.clone();
    ComputedTable::new(
        schema,
        vec![classes, namespaces],
        Arc::new(move |inputs: &[RecordBatch]| {
            let [classes, namespaces] = inputs else {
                return Err(DataFusionError::Internal(
                    "pg_class reads two tables".into(),
                ));
            };
            let namespaces = std::slice::from_ref(namespaces);
            let public = namespaces_named(namespaces, SCHEMA_NAME)?;
            let information_schema = namespaces_named(namespaces, "information_schema")?;
            let mut off_path = namespaces_named(namespaces, SYSTEM_SCHEMA)?;
            off_path.extend(information_schema.iter().copied());
            let kinds: HashMap<String, ObjectKind> = catalog
                .entries()
                .into_iter()
                .map(|e| (e.def.name, e.def.kind))
                .collect();
            let patched = set_relkinds(classes, &public, &information_schema, &kinds)?;
            let oids = int_column(&patched, "oid")?;
            let relnamespaces = int_column(&patched, "relnamespace")?;
            let hidden_oids: HashSet<i32> = (0..patched.num_rows())
                .filter(|&i| off_path.contains(&relnamespaces.value(i)))
                .map(|i| oids.value(i))
                .collect();
            if let Ok(mut slot) = hidden.write() {
                *slot = hidden_oids;
            }
            let relnames = string_column(&patched, "relname")?;
            let public_names: HashMap<i32, String> = (0..patched.num_rows())
                .filter(|&i| public.contains(&relnamespaces.value(i)))
                .map(|i| (oids.value(i), relnames.value(i).to_string()))
                .collect();
            if let Ok(mut slot) = names.write() {
                *slot = public_names;
            }
            let mut columns = patched.columns().to_vec();
            columns.push(new_null_array(&reloptions_type(), patched.num_rows()));
            Ok(RecordBatch::try_new(output.clone(), columns)?)
        }),
    )
}

/// `reloptions` (storage parameters, `text[]`): psql's `\d+` reads it and
/// datafusion-pg-catalog does not provide it. Runnel objects have none.
fn reloptions_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn with_reloptions(schema: &SchemaRef) -> SchemaRef {
    if schema.field_with_name("reloptions").is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("reloptions", reloptions_type(), true));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// OIDs of the namespaces called `wanted`. Runnel registers one DataFusion
/// catalog, so there is exactly one; matching on the namespace OID (not only
/// the name) keeps pg_catalog's own `pg_class` row apart from a user object
/// that happens to be called `pg_class`.
pub(super) fn namespaces_named(batches: &[RecordBatch], wanted: &str) -> DfResult<HashSet<i32>> {
    let mut oids = HashSet::new();
    for batch in batches {
        let names = string_column(batch, "nspname")?;
        let ids = int_column(batch, "oid")?;
        for i in 0..batch.num_rows() {
            if names.is_valid(i) && names.value(i) == wanted {
                oids.insert(ids.value(i));
            }
        }
    }
    Ok(oids)
}

fn set_relkinds(
    batch: &RecordBatch,
    public: &HashSet<i32>,
    information_schema: &HashSet<i32>,
    kinds: &HashMap<String, ObjectKind>,
) -> DfResult<RecordBatch> {
    let names = string_column(batch, "relname")?;
    let namespaces = int_column(batch, "relnamespace")?;
    let old = string_column(batch, "relkind")?;
    let relkinds: StringArray = (0..batch.num_rows())
        .map(|i| {
            let ours = public
                .contains(&namespaces.value(i))
                .then(|| kinds.get(names.value(i)))
                .flatten();
            match ours {
                Some(kind) => Some(relkind(*kind)),
                // information_schema relations are views, as in PostgreSQL.
                None if information_schema.contains(&namespaces.value(i)) => Some("v"),
                None => old.is_valid(i).then(|| old.value(i)),
            }
        })
        .collect();
    let index = batch.schema().index_of("relkind")?;
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(relkinds);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

pub(super) fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> DfResult<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} is not text")))
}

pub(super) fn int_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> DfResult<&'a datafusion::arrow::array::Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} is not int4")))
}

/// `pg_table_is_visible(oid)`: false for relations outside the search path.
fn visibility_udf(hidden: Hidden) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "pg_table_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let hidden = hidden
                .read()
                .map_err(|_| DataFusionError::Internal("visibility lock poisoned".into()))?;
            let visible = |oid: Option<i32>| oid.map(|o| !hidden.contains(&o));
            map_oids(&args[0], |oids| {
                Arc::new(
                    oids.iter()
                        .map(visible)
                        .collect::<datafusion::arrow::array::BooleanArray>(),
                )
            })
        }),
    )
}

/// `pg_get_viewdef(oid [, pretty])`: the SELECT of a view, NULL for other
/// relations.
#[derive(Debug)]
struct ViewDef {
    names: Names,
    catalog: Arc<Catalog>,
    signature: datafusion::logical_expr::Signature,
}

impl PartialEq for ViewDef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.names, &other.names)
    }
}

impl Eq for ViewDef {}

impl std::hash::Hash for ViewDef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.names).hash(state)
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for ViewDef {
    fn name(&self) -> &str {
        "pg_get_viewdef"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<ColumnarValue> {
        let names = self
            .names
            .read()
            .map_err(|_| DataFusionError::Internal("names lock poisoned".into()))?;
        let definition = |oid: Option<i32>| -> Option<String> {
            let entry = self.catalog.get(names.get(&oid?)?)?;
            (entry.def.kind == ObjectKind::View)
                .then(|| super::information_schema::view_query(&entry.def.sql))
        };
        map_oids(&args.args[0], |oids| {
            Arc::new(oids.iter().map(definition).collect::<StringArray>())
        })
    }
}

/// Applies `apply` to the OIDs of a scalar or array argument, keeping its
/// shape (a scalar in gives a scalar out).
pub(super) fn map_oids(
    arg: &ColumnarValue,
    apply: impl Fn(&datafusion::arrow::array::Int32Array) -> datafusion::arrow::array::ArrayRef,
) -> DfResult<ColumnarValue> {
    let array = arg.to_array(1)?;
    let oids = datafusion::arrow::compute::cast(&array, &DataType::Int32)?;
    let out = apply(oids.as_primitive::<Int32Type>());
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(out),
    })
}

/// Reports the one runnel role in `pg_roles`.
#[derive(Debug, Clone)]
struct RunnelRoles;

#[async_trait]
impl PgCatalogContextProvider for RunnelRoles {
    async fn roles(&self) -> Vec<String> {
        vec![OWNER.to_string()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == OWNER).then(|| Role {
            name: OWNER.to_string(),
            is_superuser: true,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// `pg_get_userbyid(oid)`: every object is owned by the one runnel role
/// (the crate's version answers "postgres").
fn owner_udf() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "pg_get_userbyid",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(oid) => ColumnarValue::Scalar(ScalarValue::Utf8(
                    (!oid.is_null()).then(|| OWNER.to_string()),
                )),
                ColumnarValue::Array(oids) => {
                    let owners: StringArray = (0..oids.len())
                        .map(|i| oids.is_valid(i).then_some(OWNER))
                        .collect();
                    ColumnarValue::Array(Arc::new(owners))
                }
            })
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::MemTable;
    use datafusion::prelude::SessionConfig;
    use datafusion::sql::parser::Statement as DfStatement;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    use super::*;
    use crate::catalog::{CatalogSchema, Definition, Entry, InformationSchema};

    /// A catalog in a temporary directory (kept alive by the returned guard)
    /// holding `objects`, each an empty table with the given schema.
    pub(crate) fn catalog_with(
        objects: &[(&str, ObjectKind, &str, SchemaRef)],
    ) -> (tempfile::TempDir, Arc<Catalog>) {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _) = Catalog::load(dir.path()).unwrap();
        for (name, kind, sql, schema) in objects {
            let def = Definition {
                id: catalog.allocate_id().unwrap(),
                name: name.to_string(),
                kind: *kind,
                sql: sql.to_string(),
                depends_on: Vec::new(),
            };
            let provider = Arc::new(MemTable::try_new(schema.clone(), vec![vec![]]).unwrap());
            catalog.create(Entry { def, provider }).unwrap();
        }
        (dir, Arc::new(catalog))
    }

    /// A session set up like `build_state` in src/database/mod.rs.
    pub(crate) fn context(catalog: &Arc<Catalog>) -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE_NAME, SCHEMA_NAME)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        let db = ctx.catalog(DATABASE_NAME).unwrap();
        db.register_schema(SCHEMA_NAME, Arc::new(CatalogSchema(catalog.clone())))
            .unwrap();
        RunnelPgCatalog::install(&ctx, catalog.clone()).unwrap();
        db.register_schema(
            "information_schema",
            Arc::new(InformationSchema::new(catalog.clone())),
        )
        .unwrap();
        db.register_schema(
            SYSTEM_SCHEMA,
            Arc::new(crate::catalog::SystemSchema::new(catalog.clone())),
        )
        .unwrap();
        ctx
    }

    /// Runs `sql` the way the server does and returns the pretty table.
    pub(crate) async fn query(ctx: &SessionContext, sql: &str) -> String {
        let mut statements = PostgresCompatibilityParser::new().parse(sql).unwrap();
        assert_eq!(statements.len(), 1);
        let statement = DfStatement::Statement(Box::new(statements.remove(0)));
        let plan = ctx.state().statement_to_plan(statement).await.unwrap();
        let batches = ctx
            .execute_logical_plan(plan)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    fn one_column() -> SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("x", DataType::Int64, true),
        ]))
    }

    fn every_kind() -> (tempfile::TempDir, Arc<Catalog>) {
        let s = one_column();
        catalog_with(&[
            (
                "t",
                ObjectKind::Table,
                "CREATE TABLE t (x BIGINT)",
                s.clone(),
            ),
            (
                "v",
                ObjectKind::View,
                "CREATE VIEW v AS SELECT x FROM t",
                s.clone(),
            ),
            (
                "m",
                ObjectKind::MaterializedView,
                "CREATE MATERIALIZED VIEW m AS SELECT x FROM t",
                s.clone(),
            ),
            (
                "src",
                ObjectKind::Source,
                "CREATE SOURCE src (x BIGINT)",
                s.clone(),
            ),
            ("snk", ObjectKind::Sink, "CREATE SINK snk FROM m", s.clone()),
            // Same name as a pg_catalog table: only the public row changes.
            (
                "pg_class",
                ObjectKind::MaterializedView,
                "CREATE MATERIALIZED VIEW pg_class AS SELECT 1",
                s,
            ),
        ])
    }

    #[tokio::test]
    async fn relkind_follows_object_kind() {
        let (_dir, catalog) = every_kind();
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            "SELECT relname, relkind FROM pg_catalog.pg_class \
             WHERE relname IN ('t', 'v', 'm', 'src', 'snk') ORDER BY relname",
        )
        .await;
        let want = "\
+---------+---------+
| relname | relkind |
+---------+---------+
| m       | m       |
| snk     | f       |
| src     | f       |
| t       | r       |
| v       | v       |
+---------+---------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn user_object_named_like_a_catalog_table() {
        let (_dir, catalog) = every_kind();
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            "SELECT n.nspname, c.relkind = 'm' AS patched FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'pg_class' ORDER BY 1",
        )
        .await;
        let want = "\
+------------+---------+
| nspname    | patched |
+------------+---------+
| pg_catalog | false   |
| public     | true    |
+------------+---------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn psql_list_relations() {
        let (_dir, catalog) = every_kind();
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            r#"SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','v','m','S','f','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;"#,
        )
        .await;
        let want = "\
+--------+----------+-------------------+--------+
| Schema | Name     | Type              | Owner  |
+--------+----------+-------------------+--------+
| public | m        | materialized view | runnel |
| public | pg_class | materialized view | runnel |
| public | snk      | foreign table     | runnel |
| public | src      | foreign table     | runnel |
| public | t        | table             | runnel |
| public | v        | view              | runnel |
+--------+----------+-------------------+--------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn foreign_relations_are_named_by_kind_and_system_tables_hidden() {
        let (_dir, catalog) = every_kind();
        let ctx = context(&catalog);
        let got = query(
            &ctx,
            "SELECT c.relname, CASE c.relkind WHEN 'f' THEN runnel_foreign_kind(c.oid) END AS kind, \
             pg_table_is_visible(c.oid) AS visible \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname IN ('public', 'runnel_catalog') AND c.relkind IN ('f', 'r') \
             ORDER BY 1",
        )
        .await;
        let want = "\
+--------------------+--------+---------+
| relname            | kind   | visible |
+--------------------+--------+---------+
| checkpoints        |        | false   |
| materialized_views |        | false   |
| sinks              |        | false   |
| snk                | sink   | true    |
| source_errors      |        | false   |
| sources            |        | false   |
| src                | source | true    |
| t                  |        | true    |
+--------------------+--------+---------+";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn relkind_is_current_after_create() {
        let (_dir, catalog) = catalog_with(&[]);
        let ctx = context(&catalog);
        let sql = "SELECT relkind FROM pg_catalog.pg_class WHERE relname = 'late'";
        assert_eq!(query(&ctx, sql).await, "++\n++");
        let def = Definition {
            id: catalog.allocate_id().unwrap(),
            name: "late".to_string(),
            kind: ObjectKind::MaterializedView,
            sql: String::new(),
            depends_on: Vec::new(),
        };
        let provider = Arc::new(MemTable::try_new(one_column(), vec![vec![]]).unwrap());
        catalog.create(Entry { def, provider }).unwrap();
        assert!(query(&ctx, sql).await.contains("| m       |"));
    }
}
