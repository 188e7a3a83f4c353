//! Windowed-view benchmark: the sensor workload of the continuous-query
//! issue, and window-close latency.
//!
//! (1) Throughput: JSON lines of 1000 sensors, read to the end by the file
//! source, through a materialized view with a 5 s tumbling window and
//! count/avg/min/max per sensor; timed from CREATE to FLUSH returning (bytes
//! in to final rows). Prints events/s, events per CPU-second of the process
//! (the per-core figure) and peak RSS. (2) Latency: a datagen source at a
//! steady rate whose event time follows the wall clock, a 1 s window, and a
//! poller that notes when each window's row becomes visible to SELECT; the
//! latency is that moment minus the moment the watermark could first pass
//! the window's end; a SUBSCRIBE client over the wire (tokio-postgres, the
//! server in this process) notes when each row reaches it, the same way.
//! This is a program that prints figures: it never asserts on timing and is
//! not run as a test. See benchmarks/README.md.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use runnel::{Config, Database};

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, peak_rss_kib};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const EVENTS: usize = 2_000_000;
const SENSORS: usize = 1000;
/// Latency run: rows per second and how long to watch.
const RATE: u64 = 20_000;
const WATCH: Duration = Duration::from_secs(20);

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("readings.json");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..EVENTS {
            let sensor = (i * 7919) % SENSORS;
            let temp = 15.0 + (i % 200) as f64 / 10.0;
            // One event per millisecond of event time.
            let (s, ms) = (i / 1000, i % 1000);
            writeln!(
                f,
                r#"{{"sensor_id":{sensor},"temperature":{temp:.1},"ts":"2026-11-21T{:02}:{:02}:{:02}.{ms:03}"}}"#,
                (s / 3600) % 24,
                (s / 60) % 60,
                s % 60
            )?;
        }
    }
    let bytes = std::fs::metadata(&path)?.len();
    let db = Database::open(Config::new(dir.path().join("data"))).await?;
    let mut session = db.session();
    session
        .execute(&format!(
            "CREATE SOURCE readings (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             WITH (connector = 'file', path = '{}') FORMAT JSON",
            path.display()
        ))
        .await?;
    let cpu = cpu_seconds();
    let start = Instant::now();
    session
        .execute(
            "CREATE MATERIALIZED VIEW temps_5s AS SELECT window_start, window_end, sensor_id, \
             count(*) AS n, avg(temperature) AS avg_t, min(temperature) AS min_t, max(temperature) AS max_t \
             FROM readings GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id",
        )
        .await?;
    session.execute("FLUSH").await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let counted = session
        .query("SELECT sum(n), count(*) FROM temps_5s")
        .await?;
    let as_i64 = |i: usize| -> BenchResult<i64> {
        let c = datafusion::arrow::compute::cast(
            counted[0].column(i),
            &datafusion::arrow::datatypes::DataType::Int64,
        )?;
        Ok(c.as_primitive::<Int64Type>().value(0))
    };
    let (total, rows) = (as_i64(0)?, as_i64(1)?);

    println!("\nviews benchmark, {cores} cores\n");
    println!(
        "sensor workload: {EVENTS} JSON events ({:.0} MB), 1000 sensors, 5 s tumble, count/avg/min/max",
        bytes as f64 / 1e6
    );
    println!(
        "  {total} events -> {rows} window rows in {seconds:.2} s: {:.0} events/s, {:.0} events per CPU-second, {:.0} MB/s, peak RSS {} MiB",
        total as f64 / seconds,
        total as f64 / cpu.max(1e-9),
        bytes as f64 / seconds / 1e6,
        peak_rss_kib().map_or(0, |k| k / 1024)
    );

    // Latency: event time follows the wall clock; a window [s, s+1) can
    // close once the clock passes s+1 (no watermark delay).
    session
        .execute(&format!(
            "CREATE SOURCE live (sensor_id INT, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
             WITH (connector = 'datagen', datagen.rows.per.second = '{RATE}', \
             fields.sensor_id.kind = 'random', fields.sensor_id.min = '1', fields.sensor_id.max = '{SENSORS}', \
             fields.ts.kind = 'event_time'); \
             CREATE MATERIALIZED VIEW live_1s AS SELECT window_end, count(*) AS n FROM live \
             GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)"
        ))
        .await?;
    let server = common::LocalServer::start(&db).await?;
    let subscriber = tokio::spawn(subscribe_latencies(server.port, Instant::now() + WATCH));
    let mut seen = std::collections::BTreeSet::new();
    let mut latencies = Vec::new();
    let until = Instant::now() + WATCH;
    while Instant::now() < until {
        let batches = session.query("SELECT window_end FROM live_1s").await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
        for b in &batches {
            let ends = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ),
            )?;
            let ends = ends.as_primitive::<TimestampMicrosecondType>();
            for i in 0..ends.len() {
                let end = ends.value(i);
                if seen.insert(end) && seen.len() > 1 {
                    latencies.push(Duration::from_micros((now - end).max(0) as u64));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    report("window-close to visible to SELECT", latencies);
    report("window-close to a SUBSCRIBE client", subscriber.await??);
    server.stop().await?;
    Ok(())
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    if latencies.is_empty() {
        println!("{what}: no windows closed in {WATCH:?}");
        return;
    }
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{what} latency ({RATE} rows/s, 1 s windows, {} windows): p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pick(0.5),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}

/// Reads `SUBSCRIBE TO live_1s` over the wire until `until`; for each row,
/// the time it arrived minus its window's end.
async fn subscribe_latencies(port: u16, until: Instant) -> BenchResult<Vec<Duration>> {
    use futures::StreamExt;
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=runnel dbname=runnel"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let rows = client
        .simple_query_raw("SUBSCRIBE TO live_1s WITH (snapshot = false)")
        .await?;
    futures::pin_mut!(rows);
    let mut latencies = Vec::new();
    let mut first = true;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(left, rows.next()).await else {
            break;
        };
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message? {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
            let end = chrono::NaiveDateTime::parse_from_str(
                row.get(0).unwrap_or_default(),
                "%Y-%m-%d %H:%M:%S%.f",
            )?
            .and_utc()
            .timestamp_micros();
            // The first window may have started before the source did.
            if !first {
                latencies.push(Duration::from_micros((now - end).max(0) as u64));
            }
            first = false;
        }
    }
    // Dropping the stream and the client ends the subscription.
    Ok(latencies)
}
