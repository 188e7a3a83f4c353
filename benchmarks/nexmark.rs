//! Nexmark benchmark: the standard Nexmark queries runnel can run, each as
//! a materialized view over finite `nexmark` sources, in events per second
//! and events per CPU-second.
//!
//! Every query reads its own copy of the same N generated events (all three
//! kinds, `nexmark.event.num`) with a fixed base time, so runs and the batch
//! check see identical data. A query is timed from its CREATE MATERIALIZED
//! VIEW (helper views included) to the view's state being `finished`; CPU is
//! the process's user+system time over the same stretch and peak RSS is
//! VmHWM, reset before each query. Then the same SQL runs in batch mode in a
//! second database over the same finite sources (helper views as plain
//! views) and the two answers must hold the same rows (sorted), so a fast
//! wrong answer cannot pass. A query the engine refuses with SQLSTATE 0A000
//! is reported as unsupported rather than failing the program; any other
//! failure or a mismatch makes the program exit with an error after the
//! table is printed. Timing is printed, never asserted.
//!
//! A first row, `source`, keeps no row at all (a filter no bid passes): the
//! cost of generating the events and moving them through the source path,
//! which every other row pays too.
//!
//! `NEXMARK_EVENTS` sets N (default 5,000,000; e.g. 100000 for a smoke run);
//! `NEXMARK_QUERIES=q0,q5-count` runs only those. See benchmarks/README.md.

use std::error::Error;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use runnel::{Config, Database, Session};

#[path = "common/mod.rs"]
mod common;

use common::{cpu_seconds, peak_rss_kib};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const DEFAULT_EVENTS: u64 = 5_000_000;
/// Event time of event 0 (2023-11-14 22:13:20 UTC): fixed so the view and
/// the batch check see the same timestamps; a multiple of 10 s.
const BASE_TIME_MS: i64 = 1_700_000_000_000;
/// A view that has not finished by then is reported as failed.
const TIMEOUT: Duration = Duration::from_secs(1800);

/// One way to write a query: helper views created first (in order), then
/// the measured view over `sql`.
struct Form {
    label: &'static str,
    helpers: &'static [(&'static str, &'static str)],
    sql: &'static str,
}

struct Query {
    name: &'static str,
    view: &'static str,
    /// Tried in order; the first one the engine accepts is measured.
    forms: &'static [Form],
}

/// Bids per auction per hopping window (2 s slide, 10 s size): q5's first half.
const HOP_COUNTS: &str = "SELECT auction, window_start, window_end, count(*) AS num FROM bid \
     GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction";
/// The highest price per 10 s tumbling window: q7's first half.
const TUMBLE_MAX: &str = "SELECT window_start, window_end, max(price) AS maxprice FROM bid \
     GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)";

const QUERIES: &[Query] = &[
    Query {
        name: "source",
        view: "source_only",
        forms: &[Form {
            label: "generator and source path, no row kept",
            helpers: &[],
            sql: "SELECT auction FROM bid WHERE price < 0",
        }],
    },
    Query {
        name: "q0",
        view: "q0",
        forms: &[Form {
            label: "passthrough",
            helpers: &[],
            sql: "SELECT auction, bidder, price, date_time FROM bid",
        }],
    },
    Query {
        name: "q1",
        view: "q1",
        forms: &[Form {
            label: "currency conversion",
            helpers: &[],
            sql: "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
        }],
    },
    Query {
        name: "q2",
        view: "q2",
        forms: &[Form {
            label: "selection",
            helpers: &[],
            sql: "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        }],
    },
    Query {
        name: "q5-count",
        view: "q5_count",
        forms: &[Form {
            label: "bids per auction per HOP window",
            helpers: &[],
            sql: HOP_COUNTS,
        }],
    },
    Query {
        name: "q7-max",
        view: "q7_max",
        forms: &[Form {
            label: "max price per TUMBLE window",
            helpers: &[],
            sql: TUMBLE_MAX,
        }],
    },
    Query {
        name: "q5",
        view: "q5",
        forms: &[
            Form {
                label: "one statement",
                helpers: &[],
                sql: "SELECT b.auction, b.num, b.window_start, b.window_end \
                 FROM (SELECT auction, window_start, window_end, count(*) AS num FROM bid \
                   GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction) b \
                 JOIN (SELECT window_end, max(num) AS maxn \
                   FROM (SELECT auction, window_end, count(*) AS num FROM bid \
                     GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction) c \
                   GROUP BY window_end) m \
                 ON b.window_end = m.window_end AND b.num >= m.maxn",
            },
            Form {
                label: "helper views",
                helpers: &[
                    ("q5_bids", HOP_COUNTS),
                    (
                        "q5_max",
                        "SELECT window_end, max(num) AS maxn FROM q5_bids GROUP BY window_end",
                    ),
                ],
                sql: "SELECT b.auction, b.num, b.window_start, b.window_end \
                 FROM q5_bids b JOIN q5_max m \
                 ON b.window_end = m.window_end AND b.num >= m.maxn",
            },
        ],
    },
    Query {
        name: "q7",
        view: "q7",
        forms: &[
            Form {
                label: "one statement",
                helpers: &[],
                sql: "SELECT b.auction, b.price, b.bidder, b.date_time, b.window_end \
                 FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) b \
                 JOIN (SELECT window_end, max(price) AS maxprice FROM bid \
                   GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m \
                 ON b.window_end = m.window_end AND b.price = m.maxprice",
            },
            Form {
                label: "helper views",
                helpers: &[("q7_maxprice", TUMBLE_MAX)],
                sql: "SELECT b.auction, b.price, b.bidder, b.date_time, b.window_end \
                 FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) b \
                 JOIN q7_maxprice m \
                 ON b.window_end = m.window_end AND b.price = m.maxprice",
            },
        ],
    },
    Query {
        name: "q8",
        view: "q8",
        forms: &[
            Form {
                label: "one statement",
                helpers: &[],
                sql: "SELECT p.id, p.name, p.window_start \
                 FROM (SELECT id, name, window_start, window_end FROM person \
                   GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), id, name) p \
                 JOIN (SELECT seller, window_start, window_end FROM auction \
                   GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), seller) a \
                 ON p.id = a.seller AND p.window_end = a.window_end",
            },
            Form {
                label: "helper views",
                helpers: &[
                    (
                        "q8_persons",
                        "SELECT id, name, window_start, window_end FROM person \
                         GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), id, name",
                    ),
                    (
                        "q8_sellers",
                        "SELECT seller, window_start, window_end FROM auction \
                         GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), seller",
                    ),
                ],
                sql: "SELECT p.id, p.name, p.window_start FROM q8_persons p JOIN q8_sellers a \
                 ON p.id = a.seller AND p.window_end = a.window_end",
            },
        ],
    },
];

/// What happened to one query.
enum Outcome {
    Ran(Run),
    /// Every form refused with 0A000: the first form's message.
    Unsupported(String),
    Failed(String),
}

struct Run {
    form: &'static str,
    seconds: f64,
    cpu: f64,
    /// RSS when the query started (memory kept from earlier queries).
    start_kib: Option<u64>,
    peak_kib: Option<u64>,
    rows: usize,
    batch_seconds: f64,
    check: Check,
}

enum Check {
    Ok,
    Mismatch(String),
    BatchFailed(String),
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult<()> {
    let events: u64 = match std::env::var("NEXMARK_EVENTS") {
        Ok(v) => v.trim().replace('_', "").parse()?,
        Err(_) => DEFAULT_EVENTS,
    };
    let only: Option<Vec<String>> = std::env::var("NEXMARK_QUERIES")
        .ok()
        .map(|v| v.split(',').map(|q| q.trim().to_string()).collect());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = tempfile::tempdir()?;
    let db = Database::open(Config::new(dir.path().join("stream"))).await?;
    let batch_db = Database::open(Config::new(dir.path().join("batch"))).await?;
    let mut session = db.session();
    let mut batch = batch_db.session();
    let sources = sources_sql(events);
    session.execute(&sources).await?;
    batch.execute(&sources).await?;

    println!(
        "\nnexmark benchmark, {cores} cores, {events} events per query \
         (person:auction:bid = 1:3:46), 10,000 events per second of event time\n"
    );
    println!(
        "| query | events | seconds | events/s | events/cpu-s | peak RSS MiB (at start) | output rows | batch s | check |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut notes = Vec::new();
    let mut bad = Vec::new();
    for query in QUERIES {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == query.name))
        {
            continue;
        }
        match measure(&mut session, &mut batch, query, &mut notes).await? {
            Outcome::Ran(r) => {
                let name = if query.forms.len() > 1 {
                    format!("{} ({})", query.name, r.form)
                } else {
                    query.name.to_string()
                };
                let check = match &r.check {
                    Check::Ok => "OK".to_string(),
                    Check::Mismatch(why) => {
                        bad.push(format!("{}: MISMATCH: {why}", query.name));
                        format!("MISMATCH: {why}")
                    }
                    Check::BatchFailed(why) => {
                        bad.push(format!("{}: batch failed: {why}", query.name));
                        format!("batch failed: {why}")
                    }
                };
                println!(
                    "| {name} | {events} | {:.2} | {:.0} | {:.0} | {} ({}) | {} | {:.2} | {check} |",
                    r.seconds,
                    events as f64 / r.seconds,
                    events as f64 / r.cpu.max(0.01),
                    mib(r.peak_kib),
                    mib(r.start_kib),
                    r.rows,
                    r.batch_seconds,
                );
            }
            Outcome::Unsupported(first) => {
                println!(
                    "| {} | {events} | unsupported: {} | | | | | | |",
                    query.name,
                    first.replace('|', "/")
                );
            }
            Outcome::Failed(why) => {
                println!("| {} | {events} | failed: {why} | | | | | | |", query.name);
                bad.push(format!("{}: {why}", query.name));
            }
        }
    }
    if !notes.is_empty() {
        println!("\nrefused with 0A000:");
        for n in &notes {
            println!("  {n}");
        }
    }
    if !bad.is_empty() {
        return Err(format!("{} queries went wrong: {}", bad.len(), bad.join("; ")).into());
    }
    Ok(())
}

/// The three finite sources, one per Nexmark table, over the same N events.
fn sources_sql(events: u64) -> String {
    ["person", "auction", "bid"]
        .iter()
        .map(|table| {
            // Events are generated in event-time order; the 4 s watermark
            // delay is RisingWave's Nexmark setting and costs nothing at the
            // end of a finite source (its final watermark closes everything).
            format!(
                "CREATE SOURCE {table} (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
                 WITH (connector = 'nexmark', nexmark.table.type = '{table}', \
                 nexmark.event.num = '{events}', nexmark.base.time = '{BASE_TIME_MS}');"
            )
        })
        .collect()
}

/// Runs the first form of `query` the engine accepts, times it, checks it
/// against batch mode and drops its views. Forms refused with 0A000 are
/// noted as `query (form): message`.
async fn measure(
    session: &mut Session,
    batch: &mut Session,
    query: &Query,
    notes: &mut Vec<String>,
) -> BenchResult<Outcome> {
    let mut refused = None;
    for form in query.forms {
        reset_peak_rss();
        let start_kib = rss_kib();
        let cpu = cpu_seconds();
        let start = Instant::now();
        if let Err(e) = create(session, query.view, form).await {
            drop_views(session, "MATERIALIZED VIEW", query.view, form).await;
            if e.sqlstate() == "0A000" {
                notes.push(format!("{} ({}): {e}", query.name, form.label));
                refused.get_or_insert(e.to_string());
                continue;
            }
            return Ok(Outcome::Failed(format!("{}: {e}", e.sqlstate())));
        }
        let finished = tokio::time::timeout(TIMEOUT, wait_finished(session, query.view)).await;
        let seconds = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let peak_kib = peak_rss_kib();
        let failed = match finished {
            Err(_) => Some(format!("not finished after {TIMEOUT:?}")),
            Ok(Err(e)) => Some(e.to_string()),
            Ok(Ok(())) => None,
        };
        if let Some(why) = failed {
            drop_views(session, "MATERIALIZED VIEW", query.view, form).await;
            return Ok(Outcome::Failed(why));
        }
        let view_rows = session
            .query(&format!("SELECT * FROM {}", query.view))
            .await?;
        let rows = view_rows.iter().map(|b| b.num_rows()).sum();
        let batch_start = Instant::now();
        let expected = batch_answer(batch, form).await;
        let batch_seconds = batch_start.elapsed().as_secs_f64();
        drop_views(batch, "VIEW", "", form).await;
        let check = match expected {
            Ok(expected) => compare(&view_rows, &expected)?,
            Err(e) => Check::BatchFailed(format!("{}: {e}", e.sqlstate())),
        };
        drop(view_rows);
        drop_views(session, "MATERIALIZED VIEW", query.view, form).await;
        return Ok(Outcome::Ran(Run {
            form: form.label,
            seconds,
            cpu,
            start_kib,
            peak_kib,
            rows,
            batch_seconds,
            check,
        }));
    }
    Ok(Outcome::Unsupported(refused.unwrap_or_default()))
}

async fn create(session: &mut Session, view: &str, form: &Form) -> runnel::Result<()> {
    for (name, sql) in form.helpers {
        session
            .execute(&format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
            .await?;
    }
    session
        .execute(&format!("CREATE MATERIALIZED VIEW {view} AS {}", form.sql))
        .await?;
    Ok(())
}

/// FLUSH (which waits for the end of a finite source), then the view's
/// state until it says `finished`.
async fn wait_finished(session: &mut Session, view: &str) -> BenchResult<()> {
    session.execute("FLUSH").await?;
    loop {
        let batches = session
            .query(&format!(
                "SELECT state FROM runnel_catalog.materialized_views WHERE name = '{view}'"
            ))
            .await?;
        let Some(first) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(format!("view {view} is not in runnel_catalog.materialized_views").into());
        };
        let state = cast(first.column(0), &DataType::Utf8)?;
        let state = state.as_string::<i32>().value(0).to_string();
        if state == "finished" {
            return Ok(());
        }
        if state.starts_with("failed") {
            return Err(state.into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same query in batch mode: helper views as plain views (stored
/// queries, read from the finite sources), then the query itself.
async fn batch_answer(batch: &mut Session, form: &Form) -> runnel::Result<Vec<RecordBatch>> {
    for (name, sql) in form.helpers {
        batch
            .execute(&format!("CREATE VIEW {name} AS {sql}"))
            .await?;
    }
    batch.query(form.sql).await
}

/// Drops `view` (when named) and the form's helpers, newest first; errors
/// are ignored because some of them may never have been created.
async fn drop_views(session: &mut Session, kind: &str, view: &str, form: &Form) {
    let names = std::iter::once(view)
        .filter(|v| !v.is_empty())
        .chain(form.helpers.iter().rev().map(|(name, _)| *name));
    for name in names {
        let _ = session
            .execute(&format!("DROP {kind} IF EXISTS {name}"))
            .await;
    }
}

/// Whether the two answers hold the same rows, in any order.
fn compare(view: &[RecordBatch], batch: &[RecordBatch]) -> BenchResult<Check> {
    let count = |bs: &[RecordBatch]| bs.iter().map(|b| b.num_rows()).sum::<usize>();
    let (view_n, batch_n) = (count(view), count(batch));
    let types = |bs: &[RecordBatch]| {
        bs.first().map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>()
        })
    };
    let (Some(view_types), Some(batch_types)) = (types(view), types(batch)) else {
        return Ok(if view_n == batch_n {
            Check::Ok
        } else {
            Check::Mismatch(format!("{view_n} rows, batch {batch_n}"))
        });
    };
    if view_types != batch_types {
        return Ok(Check::Mismatch(format!(
            "column types {view_types:?}, batch {batch_types:?}"
        )));
    }
    let converter = RowConverter::new(view_types.into_iter().map(SortField::new).collect())?;
    let encode = |bs: &[RecordBatch]| -> BenchResult<_> {
        let mut rows = converter.empty_rows(0, 0);
        for b in bs {
            converter.append(&mut rows, b.columns())?;
        }
        Ok(rows)
    };
    let (view_rows, batch_rows) = (encode(view)?, encode(batch)?);
    let mut v: Vec<_> = view_rows.iter().collect();
    let mut b: Vec<_> = batch_rows.iter().collect();
    v.sort_unstable();
    b.sort_unstable();
    if v == b {
        return Ok(Check::Ok);
    }
    let at = v
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(v.len().min(b.len()));
    let show = |row: Option<&datafusion::arrow::row::Row<'_>>| -> BenchResult<String> {
        let Some(row) = row else {
            return Ok("none".into());
        };
        let columns = converter.convert_rows([*row])?;
        let options = FormatOptions::default();
        let values = columns
            .iter()
            .map(|c| {
                Ok(ArrayFormatter::try_new(c.as_ref(), &options)?
                    .value(0)
                    .to_string())
            })
            .collect::<BenchResult<Vec<_>>>()?;
        Ok(format!("({})", values.join(", ")))
    };
    Ok(Check::Mismatch(format!(
        "{view_n} rows, batch {batch_n}; sorted row {at}: view {}, batch {}",
        show(v.get(at))?,
        show(b.get(at))?
    )))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| (k / 1024).to_string())
}

/// Resident set size now, in KiB (VmRSS).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets VmHWM so that the next reading is the peak of one query (Linux:
/// writing 5 to clear_refs); elsewhere the peak only grows.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
