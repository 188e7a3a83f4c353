//! SQL type names DataFusion does not know on its own: `json` / `jsonb`
//! (text columns tagged with Arrow's canonical `arrow.json` extension, plus
//! `pg.jsonb` for jsonb, so clients see the right type OIDs) and
//! `timestamptz` (a UTC-zoned Arrow timestamp). Everything else goes to
//! datafusion-pg-catalog's planner (oid alias types) and then DataFusion.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::error::Result;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::sql::sqlparser::ast::{DataType as SqlType, TimezoneInfo};
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;

use crate::server::JSONB_KEY;

#[derive(Debug, Default)]
pub struct RunnelTypePlanner {
    pg: PgOidTypePlanner,
}

/// A text field marked as json (or jsonb).
pub fn json_field(jsonb: bool) -> Field {
    let mut metadata =
        HashMap::from([("ARROW:extension:name".to_string(), "arrow.json".to_string())]);
    if jsonb {
        metadata.insert(JSONB_KEY.to_string(), "true".to_string());
    }
    Field::new("", DataType::Utf8, true).with_metadata(metadata)
}

impl TypePlanner for RunnelTypePlanner {
    fn plan_type_field(&self, sql_type: &SqlType) -> Result<Option<FieldRef>> {
        let field = match sql_type {
            SqlType::JSON => json_field(false),
            SqlType::JSONB => json_field(true),
            SqlType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("json") => {
                json_field(false)
            }
            SqlType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("jsonb") => {
                json_field(true)
            }
            SqlType::Timestamp(precision, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
                let unit = match precision {
                    Some(0) => TimeUnit::Second,
                    Some(1..=3) => TimeUnit::Millisecond,
                    _ => TimeUnit::Microsecond,
                };
                Field::new("", DataType::Timestamp(unit, Some("UTC".into())), true)
            }
            other => return self.pg.plan_type_field(other),
        };
        Ok(Some(Arc::new(field)))
    }
}
