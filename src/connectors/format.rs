//! Record formats: JSON lines, CSV and raw text, decoded straight into Arrow.
//!
//! The fast path hands a whole chunk to arrow-json / arrow-csv in one call.
//! Only when that fails (or the row count does not match the record count) is
//! the chunk decoded record by record, to find the bad records, keep their
//! errors, and decode the good ones together. A bad record therefore never
//! costs the good records around it, and clean input pays nothing extra.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, StringBuilder};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::json;
use datafusion::arrow::record_batch::RecordBatch;

use super::records::RawRecords;
use crate::error::{Error, Result};

/// How the records of a source are encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// One JSON object per record; fields matched to columns by name.
    Json,
    /// One CSV row per record; fields matched to columns by position.
    Csv {
        delimiter: u8,
        quote: u8,
        /// The first line of each file is a header and is skipped.
        header: bool,
    },
    /// The record as one text column.
    Raw,
}

impl Format {
    /// The name used in SQL and in the catalog views.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv { .. } => "csv",
            Format::Raw => "raw",
        }
    }

    /// True when each file starts with a line that is not a record.
    pub fn skips_header(&self) -> bool {
        matches!(self, Format::Csv { header: true, .. })
    }
}

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// Index of the record in its chunk.
    pub index: usize,
    pub message: String,
}

/// The result of decoding one chunk.
#[derive(Debug)]
pub struct Decoded {
    /// The good records, in order.
    pub batch: RecordBatch,
    /// Which records of the chunk are in `batch`; `None` when all are.
    pub kept: Option<BooleanArray>,
    pub errors: Vec<RecordError>,
}

/// Decodes chunks of one source. Stateless between chunks, so the splits of
/// a source share one.
#[derive(Debug)]
pub struct RecordDecoder {
    format: Format,
    /// The decoded columns (the source's columns without metadata).
    schema: SchemaRef,
}

impl RecordDecoder {
    pub fn try_new(format: Format, schema: SchemaRef) -> Result<Self> {
        if format == Format::Raw
            && (schema.fields().len() != 1
                || !matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ))
        {
            return Err(Error::Plan {
                sqlstate: "42P16",
                message: "FORMAT RAW reads each record into one text column; declare one \
                          text column or none (it is then called \"line\")"
                    .into(),
            });
        }
        let decoder = RecordDecoder { format, schema };
        // Building the Arrow decoder checks that every column type is one
        // the format can produce.
        decoder.decode_all(&RawRecords::default())?;
        Ok(decoder)
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decodes `records`, separating the bad ones.
    pub fn decode(&self, records: &RawRecords) -> Decoded {
        let n = records.len();
        if std::str::from_utf8(records.data()).is_ok()
            && let Ok(batch) = self.decode_all(records)
            && batch.num_rows() == n
        {
            return Decoded {
                batch,
                kept: None,
                errors: Vec::new(),
            };
        }
        self.decode_one_by_one(records)
    }

    /// The fast path: the whole chunk in one call.
    fn decode_all(&self, records: &RawRecords) -> Result<RecordBatch> {
        let rows = records.len().max(1);
        let batch = match &self.format {
            Format::Json => {
                let mut decoder = json::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(rows + 1)
                    .build_decoder()?;
                let used = decoder.decode(records.data())?;
                if used != records.data().len() {
                    return Err(Error::Data {
                        sqlstate: "22P02",
                        message: "more JSON values than records".into(),
                    });
                }
                decoder.flush()?
            }
            Format::Csv {
                delimiter, quote, ..
            } => {
                let mut decoder = datafusion::arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .with_quote(*quote)
                    .with_batch_size(rows + 1)
                    .build_decoder();
                let used = decoder.decode(records.data())?;
                if used != records.data().len() {
                    return Err(Error::Data {
                        sqlstate: "22P02",
                        message: "more CSV rows than records".into(),
                    });
                }
                decoder.flush()?
            }
            Format::Raw => {
                let text = std::str::from_utf8(records.data()).map_err(|e| Error::Data {
                    sqlstate: "22021",
                    message: format!("invalid UTF-8: {e}"),
                })?;
                let mut builder = StringBuilder::with_capacity(records.len(), text.len());
                let mut start = 0;
                for i in 0..records.len() {
                    let len = records.record(i).len();
                    builder.append_value(&text[start..start + len]);
                    start += len + 1;
                }
                let column: ArrayRef = Arc::new(builder.finish());
                let column =
                    datafusion::arrow::compute::cast(&column, self.schema.field(0).data_type())?;
                Some(RecordBatch::try_new(self.schema.clone(), vec![column])?)
            }
        };
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())))
    }

    /// The slow path: find the bad records one by one, then decode the good
    /// ones together.
    fn decode_one_by_one(&self, records: &RawRecords) -> Decoded {
        let mut errors = Vec::new();
        let mut kept = Vec::with_capacity(records.len());
        let mut good = Vec::new();
        for i in 0..records.len() {
            let mut single = RawRecords::with_capacity(1, records.record(i).len());
            single.push(records.record(i), records.position(i));
            match self.check_one(&single) {
                Ok(batch) => {
                    kept.push(true);
                    good.push(batch);
                }
                Err(message) => {
                    kept.push(false);
                    errors.push(RecordError { index: i, message });
                }
            }
        }
        let batch = concat_batches(&self.schema, &good)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.schema.clone()));
        Decoded {
            batch,
            kept: Some(BooleanArray::from(kept)),
            errors,
        }
    }

    fn check_one(&self, single: &RawRecords) -> std::result::Result<RecordBatch, String> {
        let record = single.record(0);
        if let Err(e) = std::str::from_utf8(record) {
            return Err(format!("invalid UTF-8: {e}"));
        }
        match self.decode_all(single) {
            Ok(batch) if batch.num_rows() == 1 => Ok(batch),
            Ok(batch) if batch.num_rows() == 0 => Err(match self.format {
                Format::Json => "not a JSON object".into(),
                _ => "empty record".into(),
            }),
            Ok(_) => Err("more than one value in one record".into()),
            Err(e) => Err(clean_message(&e)),
        }
    }
}

/// Arrow's messages carry a "Json error: " / "Parser error: " prefix and
/// sometimes the internal batch-relative line number; keep the useful part.
fn clean_message(e: &Error) -> String {
    let text = match e {
        Error::Data { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let mut text = text.as_str();
    for prefix in [
        "Arrow error: ",
        "Json error: ",
        "Parser error: ",
        "Csv error: ",
        "External error: ",
    ] {
        text = text.strip_prefix(prefix).unwrap_or(text);
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]))
    }

    fn records(lines: &[&[u8]]) -> RawRecords {
        let mut r = RawRecords::default();
        for (i, l) in lines.iter().enumerate() {
            r.push(l, i as u64);
        }
        r
    }

    #[test]
    fn clean_json_takes_the_fast_path() {
        let d = RecordDecoder::try_new(Format::Json, schema()).unwrap();
        let out = d.decode(&records(&[
            br#"{"id": 1, "name": "a", "ts": "2026-01-01T00:00:00"}"#,
            br#"{"id": 2, "ts": "2026-01-01 00:00:01", "extra": true}"#,
        ]));
        assert!(out.errors.is_empty());
        assert!(out.kept.is_none());
        assert_eq!(out.batch.num_rows(), 2);
        assert!(out.batch.column(1).is_null(1));
    }

    #[test]
    fn bad_json_records_are_isolated() {
        let d = RecordDecoder::try_new(Format::Json, schema()).unwrap();
        let out = d.decode(&records(&[
            br#"{"id": 1, "ts": "2026-01-01T00:00:00"}"#,
            br#"{"id": 2, "ts": "2026-01-01T00:00:0"#, // truncated
            br#"{"id": "x", "ts": "2026-01-01T00:00:00"}"#, // wrong type
            br#"{"id": 4}"#,                           // missing event time
            b"{\"id\": 5, \"name\": \"\xff\", \"ts\": \"2026-01-01T00:00:00\"}", // bad UTF-8
            br#"{"id": 6, "ts": "2026-01-01T00:00:06"}"#,
            br#"[1, 2]"#,
        ]));
        let bad: Vec<usize> = out.errors.iter().map(|e| e.index).collect();
        assert_eq!(bad, vec![1, 2, 3, 4, 6], "{:?}", out.errors);
        let ids = out.batch.column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 6]);
        let kept = out.kept.unwrap();
        assert_eq!(kept.true_count(), 2);
        assert!(out.errors.iter().all(|e| !e.message.is_empty()));
    }

    #[test]
    fn csv_records_with_wrong_field_counts_or_types_are_isolated() {
        let d = RecordDecoder::try_new(
            Format::Csv {
                delimiter: b',',
                quote: b'"',
                header: false,
            },
            schema(),
        )
        .unwrap();
        let out = d.decode(&records(&[
            b"1,a,2026-01-01T00:00:00",
            b"2,b",
            b"x,c,2026-01-01T00:00:00",
            b"4,\"d,e\",2026-01-01T00:00:04",
        ]));
        assert_eq!(
            out.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.batch.column(1).as_string::<i32>().value(1), "d,e");
    }

    #[test]
    fn raw_lines_keep_their_text_and_refuse_bad_utf8() {
        let s = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let d = RecordDecoder::try_new(Format::Raw, s).unwrap();
        let out = d.decode(&records(&[b"GET /a 200", b"\xfe\xff", b"", b"POST /b 500"]));
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].index, 1);
        let lines = out.batch.column(0).as_string::<i32>();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines.value(2), "POST /b 500");
        let bad_schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        assert!(RecordDecoder::try_new(Format::Raw, bad_schema).is_err());
    }
}
