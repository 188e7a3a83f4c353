//! Ingest benchmark: how fast each source connector and format turns bytes
//! into Arrow rows.
//!
//! Prints one table: (1) the decoders alone (JSON lines, CSV, raw lines) on
//! one core over in-memory chunks, (2) the file connector end to end per
//! format (`SELECT count(*)` over a finite file source, through the same
//! `Database` front door the server uses), (3) the datagen generator, and
//! (4) the TCP connector fed by two local clients. For each: events, seconds,
//! events/s, events per CPU-second of the whole process (the honest "per
//! core" figure), MB/s, and the process's peak RSS so far. This is a program
//! that prints figures: it never asserts on timing and is not run as a test.
//! See benchmarks/README.md for the latest numbers.

use std::error::Error;
use std::io::Write;
use std::time::Instant;

use futures::StreamExt;
use runnel::connectors::{Format, RawRecords, RecordDecoder};
use runnel::{Config, Database, Output};
use tokio::io::AsyncWriteExt;

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, peak_rss_kib};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Records per workload.
const EVENTS: usize = 2_000_000;
/// Records per decoder call: about what a file read or Kafka fetch yields.
const CHUNK: usize = 8192;
/// Distinct sensors in the generated readings.
const SENSORS: usize = 1000;

struct Figure {
    workload: String,
    events: u64,
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let mut rows = Vec::new();

    for format in ["json", "csv", "raw"] {
        let lines = sensor_lines(format, EVENTS);
        figures.push(decode_only(format, &lines)?);
        rows.push(peak_rss_kib());
    }

    let db = Database::open(Config::new(dir.path().join("data"))).await?;
    for format in ["json", "csv", "raw"] {
        let path = dir.path().join(format!("readings.{format}"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for line in sensor_lines(format, EVENTS) {
            f.write_all(&line)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
        let bytes = std::fs::metadata(&path)?.len();
        let columns = if format == "raw" {
            String::new()
        } else {
            "(sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)"
                .to_string()
        };
        let create = format!(
            "CREATE SOURCE file_{format} {columns} WITH (connector = 'file', path = '{}') FORMAT {}",
            path.display(),
            format.to_uppercase()
        );
        figures.push(
            count_query(
                &db,
                &format!("file source, {format}"),
                &create,
                &format!("SELECT count(*) FROM file_{format}"),
                bytes,
            )
            .await?,
        );
        rows.push(peak_rss_kib());
    }

    let datagen = format!(
        "CREATE SOURCE gen (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'datagen', \
         datagen.rows.per.second = '0', datagen.rows.total = '{EVENTS}', datagen.seed = '1', \
         fields.sensor_id.kind = 'random', fields.sensor_id.min = '1', fields.sensor_id.max = '{SENSORS}', \
         fields.temperature.distribution = 'normal', fields.temperature.mean = '20', \
         fields.temperature.stddev = '5', fields.ts.kind = 'event_time')"
    );
    match count_query(&db, "datagen", &datagen, "SELECT count(*) FROM gen", 0).await {
        Ok(f) => {
            figures.push(f);
            rows.push(peak_rss_kib());
        }
        Err(e) => eprintln!("datagen skipped: {e}"),
    }

    match kafka(&db).await {
        Ok(f) => {
            figures.push(f);
            rows.push(peak_rss_kib());
        }
        Err(e) => eprintln!("kafka skipped: {e}"),
    }

    match tcp(&db).await {
        Ok(f) => {
            figures.push(f);
            rows.push(peak_rss_kib());
        }
        Err(e) => eprintln!("tcp skipped: {e}"),
    }

    println!(
        "\ningest benchmark: {EVENTS} sensor readings per workload, {cores} cores, chunks of {CHUNK}\n"
    );
    println!(
        "{:<24} {:>10} {:>8} {:>12} {:>14} {:>8} {:>12}",
        "workload", "events", "seconds", "events/s", "events/cpu-s", "MB/s", "peak RSS MiB"
    );
    for (f, rss) in figures.iter().zip(rows) {
        println!(
            "{:<24} {:>10} {:>8.2} {:>12.0} {:>14.0} {:>8} {:>12}",
            f.workload,
            f.events,
            f.seconds,
            f.events as f64 / f.seconds,
            f.events as f64 / f.cpu_seconds.max(1e-9),
            if f.bytes > 0 {
                format!("{:.0}", f.bytes as f64 / f.seconds / 1e6)
            } else {
                "-".into()
            },
            rss.map_or("-".into(), |k| format!("{}", k / 1024)),
        );
    }
    Ok(())
}

/// Readings as JSON lines, CSV rows, or access-log-like raw lines.
fn sensor_lines(format: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let sensor = (i * 7919) % SENSORS;
            let temp = 15.0 + (i % 200) as f64 / 10.0;
            let (s, ms) = (i / 1000, i % 1000);
            let ts = format!(
                "2026-11-21T{:02}:{:02}:{:02}.{ms:03}",
                (s / 3600) % 24,
                (s / 60) % 60,
                s % 60
            );
            match format {
                "json" => {
                    format!(r#"{{"sensor_id":{sensor},"temperature":{temp:.1},"ts":"{ts}"}}"#)
                }
                "csv" => format!("{sensor},{temp:.1},{ts}"),
                _ => format!("{ts} sensor={sensor} temperature={temp:.1} GET /api/v1/readings 200"),
            }
            .into_bytes()
        })
        .collect()
}

fn decode_only(format: &str, lines: &[Vec<u8>]) -> BenchResult<Figure> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = if format == "raw" {
        Schema::new(vec![Field::new("line", DataType::Utf8, true)])
    } else {
        Schema::new(vec![
            Field::new("sensor_id", DataType::Int32, true),
            Field::new("temperature", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        ])
    };
    let fmt = match format {
        "json" => Format::Json,
        "csv" => Format::Csv {
            delimiter: b',',
            quote: b'"',
            header: false,
        },
        _ => Format::Raw,
    };
    let decoder = RecordDecoder::try_new(fmt, std::sync::Arc::new(schema))?;
    let chunks: Vec<RawRecords> = lines
        .chunks(CHUNK)
        .map(|c| {
            let mut r = RawRecords::with_capacity(c.len(), c.iter().map(Vec::len).sum());
            for (i, l) in c.iter().enumerate() {
                r.push(l, i as u64);
            }
            r
        })
        .collect();
    let bytes: usize = chunks.iter().map(RawRecords::byte_len).sum();
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut events = 0;
    for chunk in &chunks {
        let out = decoder.decode(chunk);
        assert!(out.errors.is_empty(), "{:?}", out.errors.first());
        events += out.batch.num_rows() as u64;
    }
    Ok(Figure {
        workload: format!("decode only, {format}"),
        events,
        bytes: bytes as u64,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu,
    })
}

async fn count_query(
    db: &Database,
    workload: &str,
    create: &str,
    query: &str,
    bytes: u64,
) -> BenchResult<Figure> {
    let mut session = db.session();
    session.execute(create).await?;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let batches = session.query(query).await?;
    let seconds = start.elapsed().as_secs_f64();
    let counted = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .ok_or("count(*) returned nothing")?;
    Ok(Figure {
        workload: workload.to_string(),
        events: counted as u64,
        bytes,
        seconds,
        cpu_seconds: cpu_seconds() - cpu,
    })
}

/// A tansu broker (the one scripts/test.sh installs) with the readings as
/// JSON in a 2-partition topic, read back by a kafka source. Producing is
/// not timed.
async fn kafka(db: &Database) -> BenchResult<Figure> {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::{Compression, UnknownTopicHandling};
    use rskafka::record::Record;
    let tansu = std::env::var("RUNNEL_TANSU").unwrap_or_else(|_| {
        format!(
            "{}/.cache/runnel/tools/bin/tansu",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    if !std::path::Path::new(&tansu).exists() {
        return Err(format!("no tansu at {tansu}; scripts/test.sh installs it").into());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = std::process::Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let outcome = async {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err::<Figure, Box<dyn Error + Send + Sync>>("tansu did not start".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let address = format!("127.0.0.1:{port}");
        let client = ClientBuilder::new(vec![address.clone()]).build().await?;
        client
            .controller_client()?
            .create_topic("readings", 2, 1, 5_000)
            .await?;
        let lines = sensor_lines("json", EVENTS);
        let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        for (partition, half) in lines.chunks(EVENTS / 2).enumerate() {
            let pc = client
                .partition_client("readings", partition as i32, UnknownTopicHandling::Retry)
                .await?;
            for batch in half.chunks(5000) {
                let records = batch
                    .iter()
                    .map(|l| Record {
                        key: None,
                        value: Some(l.clone()),
                        headers: Default::default(),
                        timestamp: chrono::Utc::now(),
                    })
                    .collect();
                pc.produce(records, Compression::NoCompression).await?;
            }
        }
        let mut session = db.session();
        session
            .execute(&format!(
                "CREATE SOURCE kafka_json (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'kafka', \
                 topic = 'readings', properties.bootstrap.server = '{address}') FORMAT JSON"
            ))
            .await?;
        let cpu = cpu_seconds();
        let start = Instant::now();
        let events = stream_rows(
            &mut session,
            &format!("SELECT sensor_id FROM kafka_json LIMIT {EVENTS}"),
        )
        .await?;
        Ok(Figure {
            workload: "kafka source, json".into(),
            events,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - cpu,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Runs `sql` and counts the rows it streams.
async fn stream_rows(session: &mut runnel::Session, sql: &str) -> BenchResult<u64> {
    let mut outputs = session.execute(sql).await?;
    let Some(Output::Rows(rows)) = outputs.pop() else {
        return Err("the query returned no rows".into());
    };
    let mut stream = rows.stream;
    let mut events = 0u64;
    while let Some(batch) = stream.next().await {
        events += batch?.num_rows() as u64;
    }
    Ok(events)
}

/// Two clients stream raw lines into a TCP source; the query reads
/// `EVENTS` rows and stops.
async fn tcp(db: &Database) -> BenchResult<Figure> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut session = db.session();
    session
        .execute(&format!(
            "CREATE SOURCE tcp_lines WITH (connector = 'tcp', port = '{port}') FORMAT RAW"
        ))
        .await?;
    let per_client = EVENTS / 2;
    let lines = sensor_lines("raw", per_client);
    let payload: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain(std::iter::once(b'\n')))
        .collect();
    let bytes = payload.len() as u64 * 2;
    let payload = std::sync::Arc::new(payload);
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut outputs = session
        .execute(&format!("SELECT line FROM tcp_lines LIMIT {EVENTS}"))
        .await?;
    let mut senders = Vec::new();
    for _ in 0..2 {
        let payload = payload.clone();
        senders.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(&payload).await?;
            s.shutdown().await
        }));
    }
    let Some(Output::Rows(rows)) = outputs.pop() else {
        return Err("SELECT returned no rows".into());
    };
    let mut stream = rows.stream;
    let mut events = 0u64;
    while let Some(batch) = stream.next().await {
        events += batch?.num_rows() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    for s in senders {
        let _ = s.await;
    }
    Ok(Figure {
        workload: "tcp source, raw, 2 clients".into(),
        events,
        bytes,
        seconds,
        cpu_seconds: cpu_seconds() - cpu,
    })
}
