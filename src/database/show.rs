//! SHOW name / SHOW ALL (session settings) and SHOW TABLES / VIEWS /
//! MATERIALIZED VIEWS / SOURCES / SINKS (catalog objects of one kind), and
//! the row shapes both return.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Output, Session, rows_from_batches, string_batch};
use crate::catalog::Entry;
use crate::error::{CatalogErrorKind, Error, Result};
use crate::sql::ObjectKind;

impl Session {
    pub(super) fn show(&self, name: &str) -> Result<Output> {
        let lower = name.to_ascii_lowercase();
        if lower == "all" {
            let all = self.settings.read().map(|s| s.all()).unwrap_or_default();
            let schema = show_all_schema();
            let columns = [0, 1, 2].map(|i| {
                all.iter()
                    .map(|r| match i {
                        0 => r.0.clone(),
                        1 => r.1.clone(),
                        _ => r.2.clone(),
                    })
                    .collect::<Vec<_>>()
            });
            return Ok(Output::Rows(rows_from_batches(
                schema.clone(),
                vec![string_batch(schema, columns.to_vec())?],
                "SHOW",
            )));
        }
        let value = if lower.starts_with("datafusion.") {
            let state = self.ctx.state();
            state
                .config_options()
                .entries()
                .into_iter()
                .find(|e| e.key == lower)
                .map(|e| e.value.unwrap_or_default())
        } else {
            self.setting(&lower)
        };
        let value = value.ok_or_else(|| {
            Error::catalog(
                CatalogErrorKind::UndefinedObject,
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        let schema = show_schema(&lower);
        let batch = string_batch(schema.clone(), vec![vec![value]])?;
        Ok(Output::Rows(rows_from_batches(schema, vec![batch], "SHOW")))
    }

    pub(super) fn show_objects(&self, kind: ObjectKind) -> Result<Output> {
        let entries: Vec<Entry> = self
            .db
            .catalog()
            .entries()
            .into_iter()
            .filter(|e| e.def.kind == kind)
            .collect();
        let schema = objects_schema();
        let names = entries.iter().map(|e| e.def.name.clone()).collect();
        let sql = entries.iter().map(|e| e.def.sql.clone()).collect();
        let batch = string_batch(schema.clone(), vec![names, sql])?;
        Ok(Output::Rows(rows_from_batches(schema, vec![batch], "SHOW")))
    }
}

pub(super) fn show_schema(name: &str) -> SchemaRef {
    let lower = name.to_ascii_lowercase();
    let column = if lower == "timezone" {
        "TimeZone".to_string()
    } else {
        lower
    };
    Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]))
}

pub(super) fn show_all_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("setting", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
    ]))
}

pub(super) fn objects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}
