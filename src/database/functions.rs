//! PostgreSQL functions whose answers depend on runnel or on the session:
//! version(), current_setting(), set_config(), pg_backend_pid(),
//! session_user / current_user. The catalog functions psql and drivers call
//! (pg_get_userbyid, format_type, ...) come from datafusion-pg-catalog.

use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::types::{logical_boolean, logical_string};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, TypeSignatureClass, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

use super::{SessionInfo, Settings, version_string};

/// Functions that are the same for every session.
pub fn register_database_functions(ctx: &SessionContext) {
    let version = version_string();
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(super::hop::HopStarts::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(super::session::SessionEnd::new()));
    // Types, functions, operators and collations all live in pg_catalog,
    // which is always on the search path.
    for name in [
        "pg_collation_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_conversion_is_visible",
    ] {
        ctx.register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(|args: &[ColumnarValue]| match &args[0] {
                ColumnarValue::Scalar(v) => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(
                    (!v.is_null()).then_some(true),
                ))),
                ColumnarValue::Array(a) => {
                    let out: datafusion::arrow::array::BooleanArray = (0..a.len())
                        .map(|i| a.is_valid(i).then_some(true))
                        .collect();
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
            }),
        ));
    }
    ctx.register_udf(constant("version", ScalarValue::Utf8(Some(version))));
    // Comments (COMMENT ON) are not supported, so every object's comment is
    // NULL, which is what PostgreSQL answers for an uncommented object; and
    // no column is backed by a sequence.
    for (name, args) in [
        ("col_description", vec![DataType::Int64, DataType::Int64]),
        ("obj_description", vec![DataType::Int64]),
        ("obj_description", vec![DataType::Int64, DataType::Utf8]),
        ("shobj_description", vec![DataType::Int64, DataType::Utf8]),
        // No column is backed by a sequence.
        (
            "pg_get_serial_sequence",
            vec![DataType::Utf8, DataType::Utf8],
        ),
    ] {
        ctx.register_udf(create_udf(
            name,
            args,
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
        ));
    }
}

/// Functions bound to one session's settings and identity.
pub fn register_session_functions(
    ctx: &SessionContext,
    settings: Arc<RwLock<Settings>>,
    info: &SessionInfo,
) {
    ctx.register_udf(constant(
        "pg_backend_pid",
        ScalarValue::Int32(Some(info.backend_pid)),
    ));
    for name in ["session_user", "current_user", "user"] {
        ctx.register_udf(constant(name, ScalarValue::Utf8(Some(info.user.clone()))));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new(
        settings.clone(),
    )));
    ctx.register_udf(set_config(settings));
}

/// A zero-argument function returning `value`.
fn constant(name: &str, value: ScalarValue) -> ScalarUDF {
    let data_type = value.data_type();
    create_udf(
        name,
        vec![],
        data_type,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

/// `current_setting(name)` and `current_setting(name, missing_ok)`.
#[derive(Debug)]
struct CurrentSetting {
    settings: Arc<RwLock<Settings>>,
    signature: Signature,
}

impl CurrentSetting {
    fn new(settings: Arc<RwLock<Settings>>) -> Self {
        CurrentSetting {
            settings,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Coercible(vec![Coercion::new_exact(
                        TypeSignatureClass::Native(logical_string()),
                    )]),
                    TypeSignature::Coercible(vec![
                        Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
                        Coercion::new_exact(TypeSignatureClass::Native(logical_boolean())),
                    ]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.settings, &other.settings)
    }
}

impl Eq for CurrentSetting {}

impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.settings).hash(state)
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let missing_ok = match args.args.get(1) {
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(b)))) => *b,
            _ => false,
        };
        let settings = self
            .settings
            .read()
            .map_err(|_| DataFusionError::Internal("settings lock poisoned".into()))?;
        map_strings(&args.args[0], |name| match settings.get(name) {
            Some(v) => Ok(Some(v)),
            None if missing_ok => Ok(None),
            None => Err(crate::error::Error::catalog(
                crate::error::CatalogErrorKind::UndefinedObject,
                format!("unrecognized configuration parameter \"{name}\""),
            )
            .into()),
        })
    }
}

/// `set_config(name, value, is_local)`: sets and returns the value.
fn set_config(settings: Arc<RwLock<Settings>>) -> ScalarUDF {
    create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let value = match &args[1] {
                ColumnarValue::Scalar(s) => s.to_string(),
                ColumnarValue::Array(_) => {
                    return Err(DataFusionError::NotImplemented(
                        "set_config with a column value is not supported".into(),
                    ));
                }
            };
            let mut settings = settings
                .write()
                .map_err(|_| DataFusionError::Internal("settings lock poisoned".into()))?;
            map_strings(&args[0], |name| {
                settings.set(name, &value)?;
                Ok(Some(value.clone()))
            })
        }),
    )
}

/// Applies `f` to every non-null string of a scalar or array argument.
fn map_strings(
    arg: &ColumnarValue,
    mut f: impl FnMut(&str) -> datafusion::error::Result<Option<String>>,
) -> datafusion::error::Result<ColumnarValue> {
    match arg {
        ColumnarValue::Scalar(s) => {
            let out = match s {
                ScalarValue::Utf8(Some(v))
                | ScalarValue::Utf8View(Some(v))
                | ScalarValue::LargeUtf8(Some(v)) => f(v)?,
                _ => None,
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(out)))
        }
        ColumnarValue::Array(array) => {
            let strings = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
            let strings = strings
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("expected strings".into()))?;
            let mut builder = StringBuilder::with_capacity(strings.len(), 0);
            for v in strings.iter() {
                builder.append_option(match v {
                    Some(v) => f(v)?,
                    None => None,
                });
            }
            Ok(ColumnarValue::Array(Arc::new(builder.finish()) as ArrayRef))
        }
    }
}

/// `json_build_object(key, value, ...)`: a json object from alternating keys
/// and values (SQLAlchemy's column reflection calls it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        JsonBuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(
        &self,
        _args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::FieldRef> {
        Ok(Arc::new(
            super::types::json_field(false).with_name(self.name()),
        ))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Execution(
                "argument list must have even number of elements".into(),
            ));
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut builder = StringBuilder::with_capacity(rows, rows * 32);
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(DataFusionError::Execution(
                        "null value not allowed for object key".into(),
                    ));
                }
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::Utf8View(Some(k))
                    | ScalarValue::LargeUtf8(Some(k)) => k,
                    other => other.to_string(),
                };
                object.insert(key, json_value(ScalarValue::try_from_array(&pair[1], row)?));
            }
            builder.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(builder.finish())))
    }
}

fn json_value(value: ScalarValue) -> serde_json::Value {
    use serde_json::Value;
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Bool(b),
        ScalarValue::Int8(Some(v)) => v.into(),
        ScalarValue::Int16(Some(v)) => v.into(),
        ScalarValue::Int32(Some(v)) => v.into(),
        ScalarValue::Int64(Some(v)) => v.into(),
        ScalarValue::UInt8(Some(v)) => v.into(),
        ScalarValue::UInt16(Some(v)) => v.into(),
        ScalarValue::UInt32(Some(v)) => v.into(),
        ScalarValue::UInt64(Some(v)) => v.into(),
        ScalarValue::Float32(Some(v)) => serde_json::Number::from_f64(v as f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ScalarValue::Float64(Some(v)) => serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}
