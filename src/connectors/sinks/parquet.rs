//! [`ParquetSinkWriter`]: rows in, complete Parquet files out.
//!
//! Each open partition directory has one `ArrowWriter` encoding into
//! memory (compressed pages, so a file costs about its size on disk). A
//! file is finished when it reaches `rollover_rows` rows, about
//! `rollover_bytes` bytes, has been open `rollover_interval`, or when the
//! sink asks (FLUSH, end of input); finished files wait in `ready` until
//! `commit.rs` makes them visible. A file that could not be committed goes
//! back to `ready` with its bytes unchanged. This file does no I/O.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::partition::Partitioner;
use crate::error::{Error, Result};

/// How files are cut and compressed.
#[derive(Debug, Clone)]
pub struct ParquetSinkConfig {
    /// Names every file of this sink run: `<prefix>-<seq>.parquet`.
    pub file_prefix: String,
    pub rollover_rows: u64,
    pub rollover_bytes: u64,
    pub rollover_interval: Duration,
    pub compression: SinkCompression,
    /// Past this many open partition files, the oldest is finished.
    pub max_open_files: usize,
}

/// `compression = 'zstd' | 'snappy' | 'none'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkCompression {
    Zstd,
    Snappy,
    None,
}

impl SinkCompression {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "zstd" => Some(SinkCompression::Zstd),
            "snappy" => Some(SinkCompression::Snappy),
            "none" | "uncompressed" => Some(SinkCompression::None),
            _ => None,
        }
    }

    fn codec(self) -> Compression {
        match self {
            // Level 3 is zstd's own default: most of the ratio, fast.
            SinkCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
            SinkCompression::Snappy => Compression::SNAPPY,
            SinkCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

impl ParquetSinkConfig {
    /// The defaults: 1M rows or 128 MiB or 5 minutes, zstd, 64 open files.
    pub fn new(file_prefix: impl Into<String>) -> Self {
        ParquetSinkConfig {
            file_prefix: file_prefix.into(),
            rollover_rows: 1_000_000,
            rollover_bytes: 128 << 20,
            rollover_interval: Duration::from_secs(300),
            compression: SinkCompression::Zstd,
            max_open_files: 64,
        }
    }
}

/// A finished file waiting to be committed.
#[derive(Debug)]
pub struct FinishedFile {
    /// The partition directory, relative to the sink's path.
    pub dir: String,
    pub name: String,
    pub bytes: Vec<u8>,
    pub rows: u64,
}

struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
    opened: Instant,
}

/// Encodes a sink's rows into Parquet files, per partition directory.
pub struct ParquetSinkWriter {
    config: ParquetSinkConfig,
    schema: SchemaRef,
    props: WriterProperties,
    partitioner: Partitioner,
    open: HashMap<String, OpenFile>,
    ready: VecDeque<FinishedFile>,
    next_seq: u64,
}

impl ParquetSinkWriter {
    pub fn new(config: ParquetSinkConfig, schema: SchemaRef, partitioner: Partitioner) -> Self {
        let row_group = config.rollover_rows.clamp(1, 1 << 20) as usize;
        let props = WriterProperties::builder()
            .set_compression(config.compression.codec())
            .set_max_row_group_row_count(Some(row_group))
            .set_created_by(format!("runnel {}", env!("CARGO_PKG_VERSION")))
            .build();
        ParquetSinkWriter {
            config,
            schema,
            props,
            partitioner,
            open: HashMap::new(),
            ready: VecDeque::new(),
            next_seq: 0,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Encodes `batch`; files that reach a limit move to `ready`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (dir, part) in self.partitioner.split(batch)? {
            let mut offset = 0;
            while offset < part.num_rows() {
                if !self.open.contains_key(&dir) {
                    self.make_room()?;
                    let writer = ArrowWriter::try_new(
                        Vec::new(),
                        self.schema.clone(),
                        Some(self.props.clone()),
                    )
                    .map_err(parquet_error)?;
                    self.open.insert(
                        dir.clone(),
                        OpenFile {
                            writer,
                            rows: 0,
                            opened: Instant::now(),
                        },
                    );
                }
                let file = self
                    .open
                    .get_mut(&dir)
                    .ok_or_else(|| crate::internal!("open file vanished"))?;
                let room = (self.config.rollover_rows - file.rows) as usize;
                let take = room.min(part.num_rows() - offset);
                file.writer
                    .write(&part.slice(offset, take))
                    .map_err(parquet_error)?;
                file.rows += take as u64;
                offset += take;
                let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
                if file.rows >= self.config.rollover_rows || size >= self.config.rollover_bytes {
                    self.finish(&dir)?;
                }
            }
        }
        Ok(())
    }

    /// Finishes the oldest open file when the limit of open files is hit.
    fn make_room(&mut self) -> Result<()> {
        if self.open.len() < self.config.max_open_files.max(1) {
            return Ok(());
        }
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.opened)
            .map(|(d, _)| d.clone());
        match oldest {
            Some(dir) => self.finish(&dir),
            None => Ok(()),
        }
    }

    fn finish(&mut self, dir: &str) -> Result<()> {
        let Some(file) = self.open.remove(dir) else {
            return Ok(());
        };
        let bytes = file.writer.into_inner().map_err(parquet_error)?;
        let name = format!("{}-{:06}.parquet", self.config.file_prefix, self.next_seq);
        self.next_seq += 1;
        self.ready.push_back(FinishedFile {
            dir: dir.to_string(),
            name,
            bytes,
            rows: file.rows,
        });
        Ok(())
    }

    /// Finishes every file open for `rollover_interval` or longer.
    pub fn roll_expired(&mut self, now: Instant) -> Result<()> {
        let interval = self.config.rollover_interval;
        let mut expired: Vec<(Instant, String)> = self
            .open
            .iter()
            .filter(|(_, f)| now.duration_since(f.opened) >= interval)
            .map(|(d, f)| (f.opened, d.clone()))
            .collect();
        expired.sort();
        for (_, dir) in expired {
            self.finish(&dir)?;
        }
        Ok(())
    }

    /// Finishes every open file (FLUSH, end of input).
    pub fn roll_all(&mut self) -> Result<()> {
        let mut dirs: Vec<(Instant, String)> = self
            .open
            .iter()
            .map(|(d, f)| (f.opened, d.clone()))
            .collect();
        dirs.sort();
        for (_, dir) in dirs {
            self.finish(&dir)?;
        }
        Ok(())
    }

    /// When the oldest open file reaches `rollover_interval`.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|f| f.opened + self.config.rollover_interval)
            .min()
    }

    /// The finished files, oldest first, to commit.
    pub fn take_ready(&mut self) -> Vec<FinishedFile> {
        self.ready.drain(..).collect()
    }

    /// Puts back files a commit could not make visible, ahead of newer ones.
    pub fn restore_ready(&mut self, files: Vec<FinishedFile>) {
        for f in files.into_iter().rev() {
            self.ready.push_front(f);
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Rows written but not yet in a visible file.
    pub fn buffered_rows(&self) -> u64 {
        self.open.values().map(|f| f.rows).sum::<u64>()
            + self.ready.iter().map(|f| f.rows).sum::<u64>()
    }

    pub fn open_files(&self) -> usize {
        self.open.len()
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> Error {
    Error::Internal(format!("encoding Parquet: {e}"))
}

/// Shared with the benchmark and the tests: a writer with `config` and no
/// partitions over `schema`.
pub fn unpartitioned(config: ParquetSinkConfig, schema: SchemaRef) -> ParquetSinkWriter {
    ParquetSinkWriter::new(config, schema, Partitioner::none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::sinks::commit_files;
    use datafusion::arrow::array::{
        ArrayRef, Decimal128Array, Int32Array, ListArray, StringArray, StructArray,
        TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::fs;
    use std::path::Path;
    use std::sync::Arc;

    fn every_kind_of_column() -> RecordBatch {
        let point = Fields::from(vec![
            Field::new("x", DataType::Int32, true),
            Field::new("label", DataType::Utf8, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts_utc",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                false,
            ),
            Field::new(
                "ts_ns",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("price", DataType::Decimal128(12, 3), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
                true,
            ),
            Field::new("point", DataType::Struct(point.clone()), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("+00:00")),
            Arc::new(TimestampNanosecondArray::from(vec![Some(5), None, Some(7)])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(12, 3)
                    .unwrap(),
            ),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
            Arc::new(StructArray::new(
                point,
                vec![
                    Arc::new(Int32Array::from(vec![1, 2, 3])),
                    Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                ],
                None,
            )),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        let file = fs::File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn arrow_types_come_back_exactly_and_files_roll_over_by_rows() {
        let dir = tempfile::tempdir().unwrap();
        let batch = every_kind_of_column();
        let mut config = ParquetSinkConfig::new("part-1-1");
        config.rollover_rows = 2;
        let mut w = unpartitioned(config, batch.schema());
        w.write(&batch).unwrap();
        w.write(&batch).unwrap();
        assert_eq!(w.buffered_rows(), 6);
        w.roll_all().unwrap();
        let (done, left, err) = commit_files(dir.path(), w.take_ready());
        assert!(err.is_none() && left.is_empty());
        assert_eq!((done.files, done.rows), (3, 6));
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "part-1-1-000000.parquet",
                "part-1-1-000001.parquet",
                "part-1-1-000002.parquet"
            ]
        );
        let mut rows = Vec::new();
        for n in &names {
            for b in read(&dir.path().join(n)) {
                assert_eq!(b.schema(), batch.schema(), "one stable, faithful schema");
                rows.push(b);
            }
        }
        let all = datafusion::arrow::compute::concat_batches(&batch.schema(), &rows).unwrap();
        let twice =
            datafusion::arrow::compute::concat_batches(&batch.schema(), &[batch.clone(), batch])
                .unwrap();
        assert_eq!(all, twice);
    }

    #[test]
    fn a_failed_commit_keeps_the_file_and_shows_nothing_partial() {
        let dir = tempfile::tempdir().unwrap();
        let batch = every_kind_of_column();
        let mut w = unpartitioned(ParquetSinkConfig::new("p"), batch.schema());
        w.write(&batch).unwrap();
        w.roll_all().unwrap();
        // A regular file where the sink's directory should be.
        let root = dir.path().join("blocked");
        fs::write(&root, b"not a directory").unwrap();
        let (done, left, err) = commit_files(&root, w.take_ready());
        assert_eq!(done.files, 0);
        assert_eq!(left.len(), 1);
        assert_eq!(err.unwrap().sqlstate(), "58030");
        fs::remove_file(&root).unwrap();
        w.restore_ready(left);
        assert_eq!(w.buffered_rows(), 3);
        let (done, _, err) = commit_files(&root, w.take_ready());
        assert!(err.is_none());
        assert_eq!(done.rows, 3);
        let names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["p-000000.parquet"]);
        assert_eq!(read(&root.join("p-000000.parquet"))[0].num_rows(), 3);
    }

    #[test]
    fn files_roll_over_by_time_and_by_bytes() {
        let batch = every_kind_of_column();
        let mut config = ParquetSinkConfig::new("t");
        config.rollover_interval = Duration::from_secs(60);
        let mut w = unpartitioned(config.clone(), batch.schema());
        w.write(&batch).unwrap();
        let deadline = w.next_deadline().unwrap();
        w.roll_expired(deadline - Duration::from_secs(1)).unwrap();
        assert!(!w.has_ready());
        w.roll_expired(deadline).unwrap();
        assert!(w.has_ready() && w.open_files() == 0);
        config.rollover_bytes = 1;
        let mut w = unpartitioned(config, batch.schema());
        w.write(&batch).unwrap();
        w.write(&batch).unwrap();
        assert_eq!(w.take_ready().len(), 2);
    }
}
