//! Parquet sink benchmark: how fast the sink writer turns a sensor-like
//! stream of Arrow batches into committed Parquet files.
//!
//! Calls `runnel::connectors::sinks` directly (the writer and the commit
//! protocol the running sink uses: encode in memory, write a hidden
//! temporary, fsync, rename, fsync the directory) on one thread, so the
//! figures are per core. Each workload writes the same 4,000,000 rows of
//! `(sensor_id INT, temperature DOUBLE, humidity DOUBLE, ts TIMESTAMP)` in
//! 8192-row batches into a temp directory, with 1,000,000-row files. Prints
//! rows/s, input MB/s (Arrow bytes of the batches) and output MB/s (Parquet
//! bytes committed), the file count and the compression ratio. A program
//! that prints figures; it never asserts on timing. See
//! benchmarks/README.md for the latest numbers.

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int32Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use runnel::connectors::sinks::{
    ParquetSinkConfig, ParquetSinkWriter, Partitioner, SinkCompression, commit_files,
};

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, peak_rss_kib};

const ROWS: usize = 4_000_000;
const BATCH: usize = 8192;
const SENSORS: i32 = 1000;
/// 2026-11-21 00:00 UTC, in ns; one reading per sensor every 10 s.
const T0: i64 = 1_795_219_200_000_000_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sensor_id", DataType::Int32, false),
        Field::new("temperature", DataType::Float64, false),
        Field::new("humidity", DataType::Float64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

/// A fixed pseudo-random number for `i` (splitmix64), so values compress
/// like real readings with two decimals, not like a pattern.
fn noise(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic readings: sensors in turn, every 10 s, noisy values.
fn batches() -> Vec<RecordBatch> {
    let schema = schema();
    (0..ROWS)
        .step_by(BATCH)
        .map(|start| {
            let n = BATCH.min(ROWS - start);
            let rows = start..start + n;
            let sensor: Int32Array = rows.clone().map(|i| i as i32 % SENSORS).collect();
            let temperature: Float64Array = rows
                .clone()
                .map(|i| 20.0 + (noise(i as u64) % 1500) as f64 / 100.0)
                .collect();
            let humidity: Float64Array = rows
                .clone()
                .map(|i| 40.0 + (noise(!(i as u64)) % 3000) as f64 / 100.0)
                .collect();
            let ts = TimestampNanosecondArray::from(
                rows.map(|i| T0 + (i as i64 / SENSORS as i64) * 10_000_000_000)
                    .collect::<Vec<i64>>(),
            );
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(sensor),
                    Arc::new(temperature),
                    Arc::new(humidity),
                    Arc::new(ts),
                ],
            )
            .expect("batch")
        })
        .collect()
}

struct Figure {
    workload: &'static str,
    seconds: f64,
    cpu: f64,
    files: u64,
    in_bytes: u64,
    out_bytes: u64,
}

fn run(
    workload: &'static str,
    compression: SinkCompression,
    partition_by: Option<&str>,
    input: &[RecordBatch],
) -> Result<Figure, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = ParquetSinkConfig::new("part-1-1");
    config.compression = compression;
    config.rollover_rows = 1_000_000;
    let partitioner = match partition_by {
        Some(p) => Partitioner::try_new(p, &schema(), &SessionContext::new().state())?,
        None => Partitioner::none(),
    };
    let mut writer = ParquetSinkWriter::new(config, schema(), partitioner);
    let in_bytes: u64 = input.iter().map(|b| b.get_array_memory_size() as u64).sum();
    let (mut files, mut out_bytes) = (0, 0);
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let mut commit = |writer: &mut ParquetSinkWriter| -> Result<(), Box<dyn Error>> {
        let (done, _, error) = commit_files(dir.path(), writer.take_ready());
        if let Some(e) = error {
            return Err(e.into());
        }
        files += done.files;
        out_bytes += done.bytes;
        Ok(())
    };
    for batch in input {
        writer.write(batch)?;
        if writer.has_ready() {
            commit(&mut writer)?;
        }
    }
    writer.roll_all()?;
    commit(&mut writer)?;
    Ok(Figure {
        workload,
        seconds: start.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu_before,
        files,
        in_bytes,
        out_bytes,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let input = batches();
    let workloads: [(&'static str, SinkCompression, Option<&str>); 4] = [
        ("zstd", SinkCompression::Zstd, None),
        ("snappy", SinkCompression::Snappy, None),
        ("none", SinkCompression::None, None),
        (
            "zstd, partition_by sensor_id % 10",
            SinkCompression::Zstd,
            Some("sensor_id % 10 AS bucket"),
        ),
    ];
    println!(
        "| workload | rows | seconds | rows/s | rows/s/core | input MB/s/core | output MB/s/core | files | ratio | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, compression, partition_by) in workloads {
        let f = run(name, compression, partition_by, &input)?;
        // One thread does the work: per core is per CPU-second used.
        let per_cpu = f.cpu.max(f.seconds * 0.01);
        let mb = |bytes: u64| bytes as f64 / 1e6;
        println!(
            "| {} | {} | {:.3} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.2} | {} |",
            f.workload,
            ROWS,
            f.seconds,
            ROWS as f64 / f.seconds,
            ROWS as f64 / per_cpu,
            mb(f.in_bytes) / per_cpu,
            mb(f.out_bytes) / per_cpu,
            f.files,
            f.in_bytes as f64 / f.out_bytes.max(1) as f64,
            peak_rss_kib().map(|k| k / 1024).unwrap_or(0),
        );
    }
    Ok(())
}
