//! Arrow <-> PostgreSQL encoding for result rows and COPY data, built on
//! arrow-pg. Adds what arrow-pg lacks: json/jsonb columns (Arrow's canonical
//! `arrow.json` extension, `pg.jsonb` marker) with jsonb's binary version byte.

use std::sync::Arc;

use bytes::BufMut;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, stream};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyTextOptions, DataRowEncoder, FieldFormat, FieldInfo,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

use crate::sql::CopyFormat;

/// Field metadata marking a jsonb column (json columns carry only the
/// `arrow.json` extension name).
pub const JSONB_KEY: &str = "pg.jsonb";
const EXTENSION_NAME: &str = "ARROW:extension:name";

/// The PostgreSQL type of an Arrow field.
pub fn pg_type(field: &Field) -> PgWireResult<Type> {
    if field.metadata().get(EXTENSION_NAME).map(String::as_str) == Some("arrow.json") {
        return Ok(if field.metadata().contains_key(JSONB_KEY) {
            Type::JSONB
        } else {
            Type::JSON
        });
    }
    arrow_pg::datatypes::field_into_pg_type(&Arc::new(field.clone()))
}

/// RowDescription fields for a result schema in the requested formats.
pub fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut info = FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f)?,
                format.format_for(i),
            );
            if let Some(o) = &options {
                info = info.with_format_options(o.clone());
            }
            Ok(info)
        })
        .collect()
}

/// jsonb's binary form: a version byte, then the JSON text.
#[derive(Debug)]
struct Jsonb<'a>(&'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

impl ToSqlText for Jsonb<'_> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
        _options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

/// Encodes one batch into DataRows.
pub fn encode_batch(
    fields: &Arc<Vec<FieldInfo>>,
    batch: &RecordBatch,
) -> Vec<PgWireResult<DataRow>> {
    let mut encoder = DataRowEncoder::new(fields.clone());
    let schema = batch.schema();
    let temporal: Vec<Option<TemporalText>> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(array, field)| TemporalText::try_new(array, field))
        .collect();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut result = Ok(());
        for (col, array) in batch.columns().iter().enumerate() {
            let pg_field = &fields[col];
            result = if let Some(t) = &temporal[col] {
                encoder.encode_field_with_type_and_format(
                    &t.text(row),
                    pg_field.datatype(),
                    pg_field.format(),
                    pg_field.format_options(),
                )
            } else if *pg_field.datatype() == Type::JSONB
                && pg_field.format() == FieldFormat::Binary
            {
                encode_jsonb(&mut encoder, array.as_ref(), row, pg_field)
            } else {
                arrow_pg::encoder::encode_value(
                    &mut encoder,
                    array,
                    row,
                    schema.field(col),
                    pg_field,
                )
            };
            if result.is_err() {
                break;
            }
        }
        rows.push(result.map(|_| encoder.take_row()));
    }
    rows
}

/// Text form of timestamps and times as PostgreSQL writes them in the ISO
/// date style: fractional seconds only as far as needed, timestamptz in the
/// session's time zone with its offset.
struct TemporalText {
    /// The values as microseconds (since the epoch, or since midnight).
    micros: datafusion::arrow::array::Int64Array,
    kind: TemporalKind,
}

enum TemporalKind {
    Timestamp,
    TimestampTz(datafusion::arrow::array::timezone::Tz),
    Time,
}

impl TemporalText {
    fn try_new(array: &Arc<dyn Array>, field: &FieldInfo) -> Option<Self> {
        use datafusion::arrow::datatypes::TimeUnit;
        if field.format() != FieldFormat::Text
            || !field
                .format_options()
                .date_style
                .to_ascii_uppercase()
                .starts_with("ISO")
        {
            return None;
        }
        let (kind, target) = match (field.datatype(), array.data_type()) {
            (t, DataType::Timestamp(_, None)) if *t == Type::TIMESTAMP => (
                TemporalKind::Timestamp,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (t, DataType::Timestamp(_, Some(_))) if *t == Type::TIMESTAMPTZ => {
                let zone = field.format_options().time_zone.clone();
                let tz = zone.parse().or_else(|_| "UTC".parse()).ok()?;
                (
                    TemporalKind::TimestampTz(tz),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                )
            }
            (t, DataType::Time32(_) | DataType::Time64(_)) if *t == Type::TIME => {
                (TemporalKind::Time, DataType::Time64(TimeUnit::Microsecond))
            }
            _ => return None,
        };
        let micros = datafusion::arrow::compute::cast(array, &target).ok()?;
        let micros = datafusion::arrow::compute::cast(&micros, &DataType::Int64).ok()?;
        Some(TemporalText {
            micros: micros
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone(),
            kind,
        })
    }

    fn text(&self, row: usize) -> Option<String> {
        use chrono::{DateTime, NaiveTime, Offset, TimeZone, Timelike};
        if self.micros.is_null(row) {
            return None;
        }
        let v = self.micros.value(row);
        Some(match &self.kind {
            TemporalKind::Timestamp => {
                let dt = DateTime::from_timestamp_micros(v)?.naive_utc();
                with_fraction(dt.format("%Y-%m-%d %H:%M:%S").to_string(), dt.nanosecond())
            }
            TemporalKind::TimestampTz(tz) => {
                let dt = tz.from_utc_datetime(&DateTime::from_timestamp_micros(v)?.naive_utc());
                let mut s =
                    with_fraction(dt.format("%Y-%m-%d %H:%M:%S").to_string(), dt.nanosecond());
                let offset = dt.offset().fix().local_minus_utc();
                let (sign, offset) = if offset < 0 {
                    ('-', -offset)
                } else {
                    ('+', offset)
                };
                s.push(sign);
                s.push_str(&format!("{:02}", offset / 3600));
                if offset % 3600 != 0 {
                    s.push_str(&format!(":{:02}", (offset % 3600) / 60));
                }
                s
            }
            TemporalKind::Time => {
                let secs = (v.div_euclid(1_000_000)) as u32;
                let t = NaiveTime::from_num_seconds_from_midnight_opt(
                    secs,
                    (v.rem_euclid(1_000_000) * 1000) as u32,
                )?;
                with_fraction(t.format("%H:%M:%S").to_string(), t.nanosecond())
            }
        })
    }
}

/// Appends `.ffffff` without trailing zeros (nothing for whole seconds).
fn with_fraction(mut s: String, nanos: u32) -> String {
    let micros = nanos / 1000;
    if micros > 0 {
        let fraction = format!(".{micros:06}");
        s.push_str(fraction.trim_end_matches('0'));
    }
    s
}

fn encode_jsonb(
    encoder: &mut DataRowEncoder,
    array: &dyn Array,
    row: usize,
    field: &FieldInfo,
) -> PgWireResult<()> {
    let text: Option<&str> = if array.is_null(row) {
        None
    } else {
        match array.data_type() {
            DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
            DataType::Utf8View => Some(array.as_string_view().value(row)),
            other => {
                return Err(PgWireError::ApiError(
                    format!("jsonb column stored as {other}").into(),
                ));
            }
        }
    };
    encoder.encode_field_with_type_and_format(
        &text.map(Jsonb),
        field.datatype(),
        field.format(),
        field.format_options(),
    )
}

/// Turns a stream of batches into a stream of DataRows (for a portal that
/// hands out rows `max_rows` at a time).
pub fn row_stream(
    fields: Arc<Vec<FieldInfo>>,
    batches: impl Stream<Item = PgWireResult<RecordBatch>> + Send + 'static,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches.flat_map(move |batch| {
        let rows = match batch {
            Ok(batch) => encode_batch(&fields, &batch),
            Err(e) => vec![Err(e)],
        };
        stream::iter(rows)
    })
}

/// Encodes batches as COPY ... TO STDOUT data: one CopyData per row.
pub struct CopyRows {
    fields: Arc<Vec<FieldInfo>>,
    encoder: CopyEncoder,
    /// The header line, until it is taken.
    header: Option<CopyData>,
}

impl CopyRows {
    pub fn new(fields: Arc<Vec<FieldInfo>>, format: &CopyFormat) -> Self {
        let delimiter = (format.delimiter as char).to_string();
        let encoder = if format.csv {
            CopyEncoder::new_csv(
                fields.clone(),
                CopyCsvOptions {
                    delimiter: delimiter.clone().into(),
                    quote: (format.quote as char).to_string().into(),
                    escape: (format.escape as char).to_string().into(),
                    null_string: format.null.clone().into(),
                    force_quote: vec![],
                },
            )
        } else {
            CopyEncoder::new_text(
                fields.clone(),
                CopyTextOptions {
                    delimiter: delimiter.clone().into(),
                    null_string: format.null.clone().into(),
                },
            )
        };
        let header = format.header.then(|| {
            let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
            let mut line = names.join(&delimiter);
            line.push('\n');
            CopyData::new(line.into_bytes().into())
        });
        CopyRows {
            fields,
            encoder,
            header,
        }
    }

    /// The header line (once), when the format asks for one.
    pub fn header(&mut self) -> Option<CopyData> {
        self.header.take()
    }

    /// The rows of `batch`; timestamps and times as in result rows.
    pub fn encode(&mut self, batch: &RecordBatch) -> PgWireResult<Vec<CopyData>> {
        let schema = batch.schema();
        let temporal: Vec<Option<TemporalText>> = batch
            .columns()
            .iter()
            .zip(self.fields.iter())
            .map(|(array, field)| TemporalText::try_new(array, field))
            .collect();
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            for (col, array) in batch.columns().iter().enumerate() {
                match &temporal[col] {
                    Some(t) => self.encoder.encode_field(&t.text(row))?,
                    None => arrow_pg::encoder::encode_value(
                        &mut self.encoder,
                        array,
                        row,
                        schema.field(col),
                        &self.fields[col],
                    )?,
                }
            }
            out.push(self.encoder.take_copy());
        }
        Ok(out)
    }
}

/// Every value of `batch` in PostgreSQL's text format, exactly as a client
/// receives it (NULL as `None`). Lets in-process tests compare with the wire.
pub fn text_rows(batch: &RecordBatch) -> PgWireResult<Vec<Vec<Option<String>>>> {
    let fields = Arc::new(pg_fields(batch.schema_ref(), &Format::UnifiedText, None)?);
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in encode_batch(&fields, batch) {
        let row = row?;
        let mut data: &[u8] = &row.data;
        let mut values = Vec::with_capacity(row.field_count as usize);
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            data = &data[4..];
            if len < 0 {
                values.push(None);
            } else {
                let (value, rest) = data.split_at(len as usize);
                values.push(Some(String::from_utf8_lossy(value).into_owned()));
                data = rest;
            }
        }
        out.push(values);
    }
    Ok(out)
}
