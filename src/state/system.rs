//! `runnel_catalog.checkpoints`: the recent checkpoint attempts, newest
//! last (the last 100). Read only; `catalog::system` lists the table.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `epoch` | int8 | the checkpoint's number, increasing across restarts |
//! | `state` | text | `complete`, `failed: <error>` (writing failed: disk full, permissions; retried at the next interval) or `abandoned: <why>` (a barrier did not come back in time) |
//! | `started` | timestamptz | when its barriers were injected |
//! | `duration_ms` | int8 | from the barriers to `CURRENT` switched (or the failure) |
//! | `bytes` | int8 | bytes written (0 when it failed) |
//! | `files` | int8 | state files written |
//! | `owners` | int8 | dataflows and sinks it holds (expected ones, when it failed) |

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;

use super::CheckpointHistory;

pub fn checkpoints_schema() -> SchemaRef {
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        int("epoch"),
        Field::new("state", DataType::Utf8, false),
        Field::new(
            "started",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        int("duration_ms"),
        int("bytes"),
        int("files"),
        int("owners"),
    ]))
}

pub fn checkpoints_rows(history: &CheckpointHistory) -> DfResult<RecordBatch> {
    let records = history.records();
    let int = |f: &dyn Fn(&super::CheckpointRecord) -> u64| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX))
                .collect::<Int64Array>(),
        )
    };
    let started: TimestampMicrosecondArray = records
        .iter()
        .map(|r| {
            r.started
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        })
        .collect::<Vec<_>>()
        .into();
    let columns: Vec<ArrayRef> = vec![
        int(&|r| r.epoch),
        Arc::new(
            records
                .iter()
                .map(|r| Some(r.state.clone()))
                .collect::<StringArray>(),
        ),
        Arc::new(started.with_timezone("+00:00")),
        int(&|r| r.duration.as_millis() as u64),
        int(&|r| r.bytes),
        int(&|r| r.files),
        int(&|r| r.owners),
    ];
    Ok(RecordBatch::try_new(checkpoints_schema(), columns)?)
}
