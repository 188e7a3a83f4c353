//! Connectors: where live data comes from (and, later, where results go).
//!
//! A CREATE SOURCE becomes a [`SourceSpec`] (the typed, validated meaning of
//! the statement) plus a [`Connector`] (the transport: Kafka, files, TCP,
//! generators). Connectors move bytes or generate rows; decoding, event time,
//! counters and the error log are shared (`runtime.rs`), so every connector
//! treats bad input and watermarks the same way.
//!
//! Reading model: each reader of a source (a continuous query, later a
//! materialized view) reads it independently from the connector's start
//! position, as in Flink and RisingWave, or from the split positions a
//! checkpoint recorded (`open_reader_at`). Sources that cannot replay (TCP)
//! fan their input out to the readers attached at the time.

mod datagen;
mod file;
mod format;
mod kafka;
mod live_filter;
mod nexmark;
mod options;
mod position;
mod reader;
mod records;
mod runtime;
mod scan;
pub mod sinks;
mod tcp;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::physical_expr::PhysicalExpr;

pub use format::{Format, RecordDecoder};
pub use live_filter::{LiveFilterExec, unbatched_filters};
pub use options::{Options, invalid, parse_bool, parse_duration};
pub use reader::{CheckpointRequests, FlushRequests, SourceReader, SplitPositions};
pub use records::RawRecords;
pub use runtime::{
    Downstream, Fanout, ReaderContext, ReadySignal, SourceErrorRecord, SourceStats, SplitEvent,
    SplitWriter, max_event_time,
};
pub use scan::SourceTable;

use crate::error::{Error, Result};
use crate::sql::CreateSource;
use crate::stream::EventTime;

/// The connectors runnel has, for messages.
pub const CONNECTORS: &[&str] = &["kafka", "file", "tcp", "datagen", "nexmark"];

/// A transport that feeds a source.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    /// Metadata columns this connector can add with `INCLUDE kind`: the
    /// kind and its type. The column is named `_kind` unless aliased.
    fn metadata_kinds(&self) -> Vec<(&'static str, DataType)> {
        Vec::new()
    }

    /// Columns the connector defines itself when the statement declares
    /// none (the Nexmark tables).
    fn default_columns(&self) -> Option<SchemaRef> {
        None
    }

    /// True for generators, which make Arrow rows directly and take no
    /// FORMAT.
    fn generates_rows(&self) -> bool {
        false
    }

    /// True when a reader ends by itself (files without follow, bounded
    /// generators); its last watermark is then +infinity.
    fn is_finite(&self) -> bool {
        false
    }

    /// True when a reader can start again from a recorded position. A
    /// source that cannot records no positions at checkpoints.
    fn can_replay(&self) -> bool {
        true
    }

    /// Checks at CREATE time what can be checked (a broker reachable, a
    /// topic or path there). Not called when a source is restored at
    /// startup, so that an outage then does not stop the database.
    async fn check(&self, _spec: &SourceSpec) -> Result<()> {
        Ok(())
    }

    /// Called once the spec is final, at CREATE and at restore, for
    /// connectors that hold something for the life of the source (a
    /// listening socket).
    async fn activate(&self, _spec: &Arc<SourceSpec>, _stats: &Arc<SourceStats>) -> Result<()> {
        Ok(())
    }

    /// Starts one reader: spawns its split tasks into `ctx`. Splits named
    /// in `ctx.resume` continue from their recorded position.
    fn start(&self, ctx: &mut ReaderContext) -> Result<()>;
}

/// A metadata column asked for with INCLUDE.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataColumn {
    pub kind: String,
    pub name: String,
}

/// Event time: which column, and the watermark expression over it.
#[derive(Debug, Clone)]
pub struct EventTimeSpec {
    pub column: String,
    /// `ts - INTERVAL '2' SECOND`, as written.
    pub sql: String,
    pub expr: Arc<dyn PhysicalExpr>,
}

/// The meaning of a CREATE SOURCE, checked once.
#[derive(Debug)]
pub struct SourceSpec {
    pub name: String,
    pub connector: String,
    /// Every column: decoded columns, then metadata columns.
    pub schema: SchemaRef,
    pub format: Option<Format>,
    /// Decodes records into the non-metadata columns.
    pub decoder: Arc<RecordDecoder>,
    pub metadata: Vec<MetadataColumn>,
    pub event_time: Option<EventTimeSpec>,
    /// `on_error = 'fail'`: stop at the first bad record.
    pub fail_on_error: bool,
    /// A split without data for this long stops holding back the watermark.
    pub idle_timeout: Option<Duration>,
    /// The WITH options as written, for \d and the system tables.
    pub options: BTreeMap<String, String>,
}

impl SourceSpec {
    /// Builds the spec and its connector. `declared` is the column list as
    /// DataFusion typed it (empty when none was given).
    pub fn try_new(
        create: &CreateSource,
        declared: SchemaRef,
        state: &SessionState,
    ) -> Result<(Arc<SourceSpec>, Arc<dyn Connector>)> {
        let mut all = create.options.clone();
        let connector_name = all
            .remove("connector")
            .ok_or_else(|| {
                invalid(format!(
                    "CREATE SOURCE needs WITH (connector = '...'); one of {}",
                    CONNECTORS.join(", ")
                ))
            })?
            .to_ascii_lowercase();
        let mut options = Options::new(&connector_name, all);
        let format_name = match (&create.format, options.take("format", &[])) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "the format is given both in FORMAT and in WITH (format = ...)".into(),
                ));
            }
            (Some(f), None) => Some(f.clone()),
            (None, f) => f.map(|f| f.to_ascii_lowercase()),
        };
        let fail_on_error = match options.take("on_error", &["on-error"]) {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "skip" | "continue" => false,
                "fail" | "stop" => true,
                _ => {
                    return Err(invalid(format!(
                        "on_error must be 'skip' or 'fail', not '{v}'"
                    )));
                }
            },
        };
        let idle_timeout = options.duration("idle_timeout", &["scan.watermark.idle-timeout"])?;
        let csv_options = CsvOptions::take(&mut options, &create.format_options)?;
        let connector = configure(&connector_name, &mut options, &declared)?;
        options.finish()?;

        let format = match (connector.generates_rows(), format_name) {
            (true, Some(f)) => {
                return Err(invalid(format!(
                    "connector '{connector_name}' generates rows itself and takes no FORMAT (got {f})"
                )));
            }
            (true, None) => None,
            (false, None) => {
                return Err(invalid(format!(
                    "connector '{connector_name}' needs a format: FORMAT JSON, FORMAT CSV or FORMAT RAW"
                )));
            }
            (false, Some(f)) => Some(match f.as_str() {
                "json" => Format::Json,
                "csv" => Format::Csv {
                    delimiter: csv_options.delimiter,
                    quote: csv_options.quote,
                    header: csv_options.header,
                },
                "raw" | "text" | "bytes" => Format::Raw,
                other => {
                    return Err(invalid(format!(
                        "format \"{other}\" is not supported; use JSON, CSV or RAW"
                    )));
                }
            }),
        };
        if csv_options.given && !matches!(format, Some(Format::Csv { .. })) {
            return Err(invalid(
                "CSV options are given for a source that is not FORMAT CSV".into(),
            ));
        }

        let mut columns: Vec<Field> = declared.fields().iter().map(|f| (**f).clone()).collect();
        if columns.is_empty() {
            if let Some(defaults) = connector.default_columns() {
                columns = defaults.fields().iter().map(|f| (**f).clone()).collect();
            } else if format == Some(Format::Raw) {
                columns.push(Field::new("line", DataType::Utf8, true));
            } else {
                return Err(Error::Plan {
                    sqlstate: "42601",
                    message: format!(
                        "source \"{}\" needs a column list, e.g. CREATE SOURCE {} (id INT, ts TIMESTAMP) ...",
                        create.name, create.name
                    ),
                });
            }
        }
        if let Some(wm) = &create.watermark {
            let Some(field) = columns.iter_mut().find(|f| f.name() == &wm.column) else {
                return Err(Error::Plan {
                    sqlstate: "42703",
                    message: format!(
                        "WATERMARK FOR \"{}\": source \"{}\" has no such column",
                        wm.column, create.name
                    ),
                });
            };
            if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
                return Err(Error::Plan {
                    sqlstate: "42804",
                    message: format!(
                        "WATERMARK FOR \"{}\": the column is {}, but event time must be a TIMESTAMP",
                        wm.column,
                        field.data_type()
                    ),
                });
            }
            // A record without event time cannot be placed in time: it is a
            // bad record, not a NULL.
            *field = field.clone().with_nullable(false);
        }
        let decoded = Arc::new(Schema::new(columns.clone()));

        let kinds = connector.metadata_kinds();
        let mut metadata = Vec::new();
        for include in &create.include {
            let Some((kind, data_type)) = kinds.iter().find(|(k, _)| *k == include.kind) else {
                let known: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
                return Err(invalid(format!(
                    "connector '{connector_name}' has no metadata \"{}\"{}",
                    include.kind,
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; it has {}", known.join(", "))
                    }
                )));
            };
            let name = include.alias.clone().unwrap_or_else(|| format!("_{kind}"));
            if columns.iter().any(|f| f.name() == &name) {
                return Err(Error::Plan {
                    sqlstate: "42701",
                    message: format!("column \"{name}\" specified more than once"),
                });
            }
            columns.push(Field::new(&name, data_type.clone(), true));
            metadata.push(MetadataColumn {
                kind: kind.to_string(),
                name,
            });
        }
        let schema = Arc::new(Schema::new(columns));

        let event_time = match &create.watermark {
            None => None,
            Some(wm) => {
                let sql = wm.expr.to_string();
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                let expr = state.create_logical_expr(&sql, &df_schema)?;
                let physical = state.create_physical_expr(expr, &df_schema)?;
                let result_type = physical.data_type(&schema)?;
                if !matches!(result_type, DataType::Timestamp(_, _)) {
                    return Err(Error::Plan {
                        sqlstate: "42804",
                        message: format!(
                            "the WATERMARK expression {sql} is {result_type}, but must be a TIMESTAMP"
                        ),
                    });
                }
                Some(EventTimeSpec {
                    column: wm.column.clone(),
                    sql,
                    expr: physical,
                })
            }
        };
        let decoder = Arc::new(RecordDecoder::try_new(
            format.clone().unwrap_or(Format::Json),
            decoded,
        )?);
        let spec = SourceSpec {
            name: create.name.clone(),
            connector: connector_name,
            schema,
            format,
            decoder,
            metadata,
            event_time,
            fail_on_error,
            idle_timeout,
            options: create.options.clone(),
        };
        Ok((Arc::new(spec), connector))
    }

    /// The watermark a batch of this source promises: the largest value of
    /// the watermark expression.
    pub fn watermark_of(&self, batch: &RecordBatch) -> Result<Option<EventTime>> {
        let Some(et) = &self.event_time else {
            return Ok(None);
        };
        let column = et.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        max_event_time(&column)
    }

    /// The position of metadata column `kind` among the columns, if asked.
    pub fn metadata_index(&self, kind: &str) -> Option<usize> {
        self.metadata.iter().position(|m| m.kind == kind)
    }

    /// Number of decoded (non-metadata) columns.
    pub fn decoded_columns(&self) -> usize {
        self.schema.fields().len() - self.metadata.len()
    }
}

/// CSV options, from `FORMAT CSV (delimiter = ';')` or `WITH (csv.delimiter = ';')`.
struct CsvOptions {
    delimiter: u8,
    quote: u8,
    header: bool,
    given: bool,
}

impl CsvOptions {
    fn take(options: &mut Options, format_options: &BTreeMap<String, String>) -> Result<Self> {
        let mut from_format = Options::new("format", format_options.clone());
        let mut pick = |key: &'static str, with_key: &'static str| {
            from_format
                .take(key, &[])
                .or_else(|| options.take(with_key, &[]))
        };
        let delimiter = pick("delimiter", "csv.delimiter");
        let quote = pick("quote", "csv.quote");
        let header = pick("header", "csv.header");
        from_format.finish()?;
        let given = delimiter.is_some() || quote.is_some() || header.is_some();
        let byte = |v: Option<String>, default: u8, what: &str| -> Result<u8> {
            match v {
                None => Ok(default),
                Some(v) if v == "\\t" => Ok(b'\t'),
                Some(v) if v.len() == 1 && v.is_ascii() => Ok(v.as_bytes()[0]),
                Some(v) => Err(invalid(format!(
                    "the CSV {what} must be one ASCII character, not '{v}'"
                ))),
            }
        };
        Ok(CsvOptions {
            delimiter: byte(delimiter, b',', "delimiter")?,
            quote: byte(quote, b'"', "quote")?,
            header: match header {
                None => false,
                Some(v) => parse_bool(&v)
                    .ok_or_else(|| invalid(format!("header must be true or false, not '{v}'")))?,
            },
            given,
        })
    }
}

/// Builds the connector named in WITH (connector = ...).
fn configure(
    name: &str,
    options: &mut Options,
    declared: &SchemaRef,
) -> Result<Arc<dyn Connector>> {
    Ok(match name {
        "datagen" => Arc::new(datagen::DatagenConnector::configure(options, declared)?),
        "file" => Arc::new(file::FileConnector::configure(options)?),
        "tcp" => Arc::new(tcp::TcpConnector::configure(options)?),
        "nexmark" => Arc::new(nexmark::NexmarkConnector::configure(options, declared)?),
        "kafka" => Arc::new(kafka::KafkaConnector::configure(options)?),
        other => {
            return Err(Error::Plan {
                sqlstate: "42704",
                message: format!(
                    "connector \"{other}\" does not exist; runnel has {}",
                    CONNECTORS.join(", ")
                ),
            });
        }
    })
}

/// A source as it runs: its spec, its connector and its live figures.
#[derive(Debug)]
pub struct SourceRuntime {
    pub spec: Arc<SourceSpec>,
    pub connector: Arc<dyn Connector>,
    pub stats: Arc<SourceStats>,
}

impl SourceRuntime {
    /// Activates the connector (e.g. binds a port). At CREATE, `check` runs
    /// first so that unreachable inputs are reported before anything exists.
    pub async fn try_new(
        spec: Arc<SourceSpec>,
        connector: Arc<dyn Connector>,
        creating: bool,
    ) -> Result<Arc<SourceRuntime>> {
        if creating {
            connector.check(&spec).await?;
        }
        let stats = Arc::new(SourceStats::default());
        if let Err(e) = connector.activate(&spec, &stats).await {
            if creating {
                return Err(e);
            }
            tracing::error!(source = %spec.name, "source could not start: {e}");
            stats.set_state(format!("failed: {e}"));
        }
        Ok(Arc::new(SourceRuntime {
            spec,
            connector,
            stats,
        }))
    }

    /// Starts a new, independent reader.
    pub fn open_reader(&self) -> Result<SourceReader> {
        self.open_reader_at(None)
    }

    /// Starts a new reader whose splits listed in `positions` (taken at a
    /// checkpoint barrier of an earlier reader) continue from there: it
    /// delivers exactly the records after those emitted before that
    /// barrier. Splits not listed start where the source starts. A source
    /// that cannot replay ignores `positions`.
    pub fn open_reader_at(&self, positions: Option<&SplitPositions>) -> Result<SourceReader> {
        let connector = self.connector.clone();
        let finite = self.connector.is_finite();
        let resume = match positions {
            Some(p) if self.can_replay() => p.clone(),
            Some(p) => {
                if !p.is_empty() {
                    tracing::warn!(
                        source = %self.spec.name,
                        "the source cannot replay; its recorded positions are ignored"
                    );
                }
                SplitPositions::new()
            }
            None => SplitPositions::new(),
        };
        SourceReader::start(
            self.spec.clone(),
            self.stats.clone(),
            finite,
            resume,
            |ctx| connector.start(ctx),
        )
    }

    /// Whether a reader can continue from recorded positions (`tcp`
    /// cannot: what was in flight is gone).
    pub fn can_replay(&self) -> bool {
        self.connector.can_replay()
    }
}
