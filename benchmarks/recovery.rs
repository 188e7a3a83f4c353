//! Recovery benchmark: what a checkpoint costs and what a crash costs.
//!
//! A follow-mode file source of JSON sensor readings (1000 sensors) feeds
//! a 5 s tumbling window per sensor, an updating per-sensor aggregate with
//! COUNT DISTINCT, and a Parquet sink of the window view, in one
//! in-process database. For each size of input read before the crash it
//! prints: the checkpoint's bytes and duration, then, after a crash (the
//! database dropped without a clean stop) and more input, the time to open
//! the database from the checkpoint (read, verify, restore, start), the
//! time until a FLUSH has caught up, and the events replayed (read again
//! because they came after the checkpoint). A program that prints figures;
//! it never asserts on timing. See benchmarks/README.md for the numbers.

use std::error::Error;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use runnel::{Config, Database, Session};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const SENSORS: u64 = 1000;
/// Events read after the checkpoint, before the crash (replayed).
const AFTER: u64 = 100_000;
/// 2026-11-21 00:00 UTC in µs; one reading every 1 ms.
const T0: i64 = 1_795_219_200_000_000;

fn lines(path: &Path, from: u64, n: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
    );
    for i in from..from + n {
        let ts = chrono::DateTime::from_timestamp_micros(T0 + i as i64 * 1000)
            .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
            .unwrap_or_default();
        writeln!(
            f,
            r#"{{"sensor_id": {}, "temperature": {}.{}, "ts": "{ts}"}}"#,
            (i * 7919) % SENSORS,
            (i * 31) % 40,
            i % 10
        )?;
    }
    f.flush()
}

async fn value(session: &mut Session, sql: &str) -> BenchResult<String> {
    let batches = session.query(sql).await?;
    let b = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| format!("no row from {sql}"))?;
    let c = cast(b.column(0), &DataType::Utf8)?;
    Ok(c.as_string::<i32>().value(0).to_string())
}

/// Waits until the source has delivered `n` records to each of its two
/// readers (no FLUSH: with a sink, FLUSH would take a checkpoint).
async fn caught_up(session: &mut Session, n: u64) -> BenchResult<()> {
    loop {
        let read: u64 = value(
            session,
            "SELECT records_in FROM runnel_catalog.sources WHERE name = 'r'",
        )
        .await?
        .parse()?;
        if read >= 2 * n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.checkpoint_interval = Duration::from_secs(3600);
    c
}

async fn run(before: u64) -> BenchResult<()> {
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    let input = scratch.path().join("r.json");
    lines(&input, 0, before)?;
    let db = Database::open(config(&data)).await?;
    let mut s = db.session();
    s.execute(&format!(
        "CREATE SOURCE r (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
         WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
         CREATE MATERIALIZED VIEW w AS SELECT window_start, sensor_id, count(*) AS n, \
             avg(temperature) AS a FROM r GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id; \
         CREATE MATERIALIZED VIEW u AS SELECT sensor_id, count(*) AS n, \
             count(DISTINCT temperature) AS d FROM r GROUP BY sensor_id; \
         CREATE SINK archive FROM w WITH (connector = 'parquet', path = '{}')",
        input.display(),
        scratch.path().join("archive").display()
    ))
    .await?;
    caught_up(&mut s, before).await?;
    let started = Instant::now();
    s.execute("CHECKPOINT").await?;
    let took = started.elapsed();
    let bytes = value(
        &mut s,
        "SELECT bytes FROM runnel_catalog.checkpoints WHERE state = 'complete' \
         ORDER BY epoch DESC LIMIT 1",
    )
    .await?;
    lines(&input, before, AFTER)?;
    caught_up(&mut s, before + AFTER).await?;
    // The crash: no clean stop, no last checkpoint.
    drop(s);
    drop(db);
    tokio::time::sleep(Duration::from_millis(200)).await;
    lines(&input, before + AFTER, 1000)?;

    let opening = Instant::now();
    let db = Database::open(config(&data)).await?;
    let opened = opening.elapsed();
    let mut s = db.session();
    s.execute("FLUSH").await?;
    let flushed = opening.elapsed();
    let replayed: u64 = value(
        &mut s,
        "SELECT records_in FROM runnel_catalog.sources WHERE name = 'r'",
    )
    .await?
    .parse()?;
    println!(
        "{:>10} | {:>10.1} | {:>8.0} | {:>9.0} | {:>12.0} | {:>9}",
        before,
        bytes.parse::<f64>()? / 1_048_576.0,
        took.as_secs_f64() * 1000.0,
        opened.as_secs_f64() * 1000.0,
        flushed.as_secs_f64() * 1000.0,
        replayed / 2,
    );
    db.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    println!("read before | state MiB | cp ms | open ms | caught up ms | replayed (per reader)");
    for before in [100_000, 1_000_000, 3_000_000] {
        run(before).await?;
    }
    Ok(())
}
