//! `runnel_catalog.sinks`: one row per sink, from its live figures. Read
//! only; `catalog::system` lists the table and hands over the sinks.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `name` | text | the sink's name |
//! | `connector` | text | `parquet` |
//! | `input` | text | the view or source it writes, or `query` for `AS query` |
//! | `path` | text | the directory its files go under |
//! | `partition_by` | text | the partition columns as `name = expression`, joined with `, `; NULL without |
//! | `state` | text | `running`, `retrying: <error>` (a commit failed; rows kept, retried with backoff), `finished` (the input ended, everything committed), `failed: <error>` |
//! | `rows_written` | int8 | rows in committed (visible) files since startup |
//! | `files_written` | int8 | files committed since startup |
//! | `bytes_written` | int8 | bytes of those files |
//! | `rows_buffered` | int8 | rows accepted but not yet in a visible file |
//! | `open_files` | int8 | files being filled now |
//! | `commit_errors` | int8 | failed commit attempts since startup |
//! | `last_commit` | timestamptz | when a file was last committed; NULL before |
//! | `last_error` | text | the last commit or input error; NULL when none happened |
//! | `watermark` | timestamp | the input's watermark; NULL before the first |
//! | `options` | text | the WITH options as written |

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;

use super::SinkRuntime;
use crate::stream::EventTime;

pub fn sinks_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        text("name", false),
        text("connector", false),
        text("input", false),
        text("path", false),
        text("partition_by", true),
        text("state", false),
        int("rows_written"),
        int("files_written"),
        int("bytes_written"),
        int("rows_buffered"),
        int("open_files"),
        int("commit_errors"),
        Field::new(
            "last_commit",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        ),
        text("last_error", true),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        text("options", false),
    ]))
}

/// The rows of `runnel_catalog.sinks` for `sinks`, in the order given.
pub fn sinks_rows(sinks: &[Arc<SinkRuntime>]) -> DfResult<RecordBatch> {
    let texts = |f: &dyn Fn(&SinkRuntime) -> Option<String>| -> ArrayRef {
        Arc::new(sinks.iter().map(|s| f(s)).collect::<StringArray>())
    };
    let count = |f: &dyn Fn(&SinkRuntime) -> u64| -> ArrayRef {
        Arc::new(
            sinks
                .iter()
                .map(|s| i64::try_from(f(s)).unwrap_or(i64::MAX))
                .collect::<Int64Array>(),
        )
    };
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let columns: Vec<ArrayRef> = vec![
        texts(&|s| Some(s.spec.name.clone())),
        texts(&|_| Some("parquet".to_string())),
        texts(&|s| Some(s.spec.input.clone())),
        texts(&|s| Some(s.spec.path.display().to_string())),
        texts(&|s| {
            let columns = s.spec.partitioner.columns();
            (!columns.is_empty()).then(|| {
                columns
                    .iter()
                    .map(|c| format!("{} = {}", c.name, c.sql))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        }),
        texts(&|s| Some(s.stats.state())),
        count(&|s| s.stats.rows_written.load(Relaxed)),
        count(&|s| s.stats.files_written.load(Relaxed)),
        count(&|s| s.stats.bytes_written.load(Relaxed)),
        count(&|s| s.stats.rows_buffered.load(Relaxed)),
        count(&|s| s.stats.open_files.load(Relaxed)),
        count(&|s| s.stats.commit_errors.load(Relaxed)),
        Arc::new(
            sinks
                .iter()
                .map(|s| {
                    s.stats.last_commit().map(|t| {
                        t.duration_since(UNIX_EPOCH)
                            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                            .unwrap_or(0)
                    })
                })
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("+00:00"),
        ),
        texts(&|s| s.stats.last_error()),
        Arc::new(
            sinks
                .iter()
                .map(|s| {
                    let w = s.stats.watermark.load(Relaxed);
                    (w != EventTime::MIN && w != EventTime::MAX).then_some(w)
                })
                .collect::<TimestampMicrosecondArray>(),
        ),
        texts(&|s| {
            Some(
                s.spec
                    .options
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", quote(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }),
    ];
    Ok(RecordBatch::try_new(sinks_schema(), columns)?)
}
