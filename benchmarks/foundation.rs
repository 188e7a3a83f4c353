//! Foundation benchmark: the table path before any streaming exists.
//!
//! Measures, and prints as one table, (1) durable CSV COPY ingest through the
//! in-process API, (2) a GROUP BY aggregate scan over the ingested rows,
//! (3) single-row prepared INSERT latency over the PostgreSQL wire protocol and
//! (4) prepared point-query latency over the wire. The server runs in this
//! process on 127.0.0.1:0 and is stopped at the end. This is a program that
//! prints figures: it never asserts on timing and is not run as a test.
//! See benchmarks/README.md for what each figure means.

use std::error::Error;
use std::future::Future;
use std::time::{Duration, Instant};

use runnel::{Config, Database, Output};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

#[path = "common/mod.rs"]
mod common;

use common::peak_rss_kib;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Rows generated for the COPY and scanned by the aggregate.
const COPY_ROWS: u64 = 2_000_000;
/// Distinct sensors, i.e. groups of the aggregate.
const SENSORS: u64 = 1000;
/// Bytes handed to `CopyIn::push` at a time, about what a client sends.
const COPY_CHUNK: usize = 64 * 1024;
/// Timed runs of the aggregate query (after one warm-up run).
const AGGREGATE_RUNS: usize = 5;
/// Timed single-row INSERTs over the wire.
const INSERTS: usize = 2000;
/// Timed point queries over the wire.
const POINT_QUERIES: usize = 2000;
/// Untimed calls before each latency loop, so connection and plan caches are warm.
const WARMUP: usize = 50;

/// One line of the printed table.
struct Figure {
    workload: &'static str,
    count: u64,
    seconds: f64,
    /// Per-call latencies, for workloads made of many small calls.
    latencies: Option<(Duration, Duration)>,
    peak_rss_kib: Option<u64>,
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir()?;
    let db = Database::open(Config::new(dir.path())).await?;
    let mut figures = Vec::new();

    figures.push(copy_ingest(&db).await?);
    figures.push(aggregate(&db).await?);

    let server = common::LocalServer::start(&db).await?;
    let client = connect(server.port).await?;
    figures.push(wire_inserts(&client).await?);
    figures.push(point_queries(&client).await?);
    // Close the connection first so the server's drain does not wait out its grace period.
    drop(client);
    server.stop().await?;
    db.shutdown().await?;

    print_table(&figures, cores);
    Ok(())
}

/// splitmix64: deterministic pseudo-random numbers without a dependency.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Row `i` of the generated sensor table as one CSV line.
fn csv_row(i: u64, out: &mut String) {
    use std::fmt::Write;
    let sensor = i % SENSORS;
    let temperature = (mix(i) % 60_000) as f64 / 1000.0 - 10.0;
    let seconds = i / 100; // 100 readings per second, starting 2024-01-01.
    let (day, rem) = (seconds / 86_400, seconds % 86_400);
    let _ = writeln!(
        out,
        "{i},{sensor},{temperature},2024-01-{:02} {:02}:{:02}:{:02}.{:03}",
        1 + day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (i % 100) * 10
    );
}

async fn copy_ingest(db: &Database) -> BenchResult<Figure> {
    let mut session = db.session();
    session
        .execute(
            "CREATE TABLE t (id BIGINT, sensor INT, temperature DOUBLE PRECISION, ts TIMESTAMP)",
        )
        .await?;
    let mut csv = String::with_capacity(COPY_ROWS as usize * 48);
    for i in 0..COPY_ROWS {
        csv_row(i, &mut csv);
    }

    let start = Instant::now();
    let mut outputs = session
        .execute("COPY t FROM STDIN WITH (FORMAT csv)")
        .await?;
    let Some(Output::CopyIn(mut copy)) = outputs.pop() else {
        return Err("COPY FROM STDIN did not return Output::CopyIn".into());
    };
    for chunk in csv.as_bytes().chunks(COPY_CHUNK) {
        copy.push(chunk)?;
    }
    let rows = copy.finish().await?;
    let seconds = start.elapsed().as_secs_f64();
    if rows != COPY_ROWS {
        return Err(format!("COPY wrote {rows} rows, expected {COPY_ROWS}").into());
    }
    Ok(Figure {
        workload: "COPY csv ingest (durable)",
        count: rows,
        seconds,
        latencies: None,
        peak_rss_kib: peak_rss_kib(),
    })
}

async fn aggregate(db: &Database) -> BenchResult<Figure> {
    let mut session = db.session();
    let sql = "SELECT sensor, count(*), avg(temperature), min(temperature), max(temperature) \
               FROM t GROUP BY sensor";
    let mut times = Vec::with_capacity(AGGREGATE_RUNS);
    for run in 0..=AGGREGATE_RUNS {
        let start = Instant::now();
        let batches = session.query(sql).await?;
        let elapsed = start.elapsed();
        let groups: usize = batches.iter().map(|b| b.num_rows()).sum();
        if groups as u64 != SENSORS {
            return Err(format!("aggregate returned {groups} groups, expected {SENSORS}").into());
        }
        if run > 0 {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok(Figure {
        workload: "GROUP BY sensor scan (median)",
        count: COPY_ROWS,
        seconds: times[times.len() / 2].as_secs_f64(),
        latencies: None,
        peak_rss_kib: peak_rss_kib(),
    })
}

async fn connect(port: u16) -> BenchResult<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("runnel")
        .dbname("runnel")
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        // Ends with an error only if the server goes away; the client sees that.
        let _ = connection.await;
    });
    Ok(client)
}

async fn wire_inserts(client: &tokio_postgres::Client) -> BenchResult<Figure> {
    client
        .batch_execute(
            "CREATE TABLE ins (id BIGINT, sensor INT, temperature DOUBLE PRECISION, ts TIMESTAMP)",
        )
        .await?;
    let insert = client
        .prepare("INSERT INTO ins VALUES ($1, $2, $3, $4)")
        .await?;
    let base = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or("bad base timestamp")?;
    let mut next = 0i64;
    let one = |id: i64| {
        let sensor = (id % SENSORS as i64) as i32;
        let temperature = (mix(id as u64) % 60_000) as f64 / 1000.0 - 10.0;
        let ts = base + chrono::Duration::milliseconds(id * 10);
        let insert = &insert;
        async move {
            let params: [&(dyn ToSql + Sync); 4] = [&id, &sensor, &temperature, &ts];
            let written = client.execute(insert, &params).await?;
            if written != 1 {
                return Err(format!("INSERT wrote {written} rows").into());
            }
            BenchResult::Ok(())
        }
    };
    for _ in 0..WARMUP {
        one(next).await?;
        next += 1;
    }
    let (seconds, latencies) = timed_loop(INSERTS, || {
        let id = next;
        next += 1;
        one(id)
    })
    .await?;
    Ok(Figure {
        workload: "wire INSERT 1 row (prepared)",
        count: INSERTS as u64,
        seconds,
        latencies: Some(latencies),
        peak_rss_kib: peak_rss_kib(),
    })
}

async fn point_queries(client: &tokio_postgres::Client) -> BenchResult<Figure> {
    let select = client
        .prepare("SELECT id, sensor, temperature, ts FROM t WHERE id = $1")
        .await?;
    let mut seed = 0u64;
    let mut one = || {
        seed += 1;
        let id = (mix(seed ^ 0x5eed) % COPY_ROWS) as i64;
        let select = &select;
        async move {
            let row = client.query_one(select, &[&id]).await?;
            let got: i64 = row.try_get(0)?;
            if got != id {
                return Err(format!("point query for {id} returned {got}").into());
            }
            BenchResult::Ok(())
        }
    };
    for _ in 0..WARMUP {
        one().await?;
    }
    let (seconds, latencies) = timed_loop(POINT_QUERIES, one).await?;
    Ok(Figure {
        workload: "wire point SELECT (prepared)",
        count: POINT_QUERIES as u64,
        seconds,
        latencies: Some(latencies),
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Runs `n` calls one after another; returns total seconds and (p50, p99).
async fn timed_loop<F, Fut>(n: usize, mut call: F) -> BenchResult<(f64, (Duration, Duration))>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BenchResult<()>>,
{
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        call().await?;
        latencies.push(t.elapsed());
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let p50 = latencies[n / 2];
    let p99 = latencies[(n * 99 / 100).min(n - 1)];
    Ok((seconds, (p50, p99)))
}

/// Peak resident set size of this process so far (VmHWM), Linux only.
fn print_table(figures: &[Figure], cores: usize) {
    println!("runnel foundation benchmark ({cores} cores available)");
    println!();
    println!(
        "| {:<30} | {:>9} | {:>7} | {:>11} | {:>13} | {:>8} | {:>8} | {:>13} |",
        "workload",
        "rows/ops",
        "seconds",
        "rows/s",
        "rows/s/core",
        "p50 µs",
        "p99 µs",
        "peak RSS MiB"
    );
    println!(
        "|{:-<32}|{:->11}|{:->9}|{:->13}|{:->15}|{:->10}|{:->10}|{:->15}|",
        "", "", "", "", "", "", "", ""
    );
    for f in figures {
        let rate = f.count as f64 / f.seconds;
        let (p50, p99) = match f.latencies {
            Some((p50, p99)) => (p50.as_micros().to_string(), p99.as_micros().to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let rss = f
            .peak_rss_kib
            .map_or("-".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
        println!(
            "| {:<30} | {:>9} | {:>7.3} | {:>11.0} | {:>13.0} | {:>8} | {:>8} | {:>13} |",
            f.workload,
            f.count,
            f.seconds,
            rate,
            rate / cores as f64,
            p50,
            p99,
            rss
        );
    }
}
