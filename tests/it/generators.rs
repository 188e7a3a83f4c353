//! The generator connectors over the wire: `datagen` (rules, seeds, NULL
//! rates, event time, finite sources, bad options) and `nexmark` (the three
//! tables, their share of the event stream, their columns and ids).
//!
//! Every query here ends by itself: the sources are finite or the query
//! has a LIMIT. Expected Nexmark figures come from the `nexmark` crate
//! itself, never from constants typed here. Nothing asserts on timing.

use std::future::Future;
use std::time::Duration;

use chrono::NaiveDateTime;
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::harness::{TestServer, column, sqlstate, still_works, summarize};

/// A query over a finite source that takes longer than this is hung.
const TIMEOUT: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TIMEOUT:?}"))
}

/// Every row as text, in order.
async fn rows(client: &Client, sql: &str) -> Vec<String> {
    let out = within(sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    summarize(&out)
        .into_iter()
        .filter(|r| !r.starts_with("complete "))
        .collect()
}

/// The single value of a one-row, one-column query, as a number.
async fn number(client: &Client, sql: &str) -> f64 {
    let values = within(sql, column(client, sql)).await;
    let [Some(v)] = values.as_slice() else {
        panic!("{sql}: expected one value, got {values:?}");
    };
    v.parse()
        .unwrap_or_else(|_| panic!("{sql}: {v} is not a number"))
}

const RULES: &str = "CREATE SOURCE g (id BIGINT, u INT, c TEXT, n DOUBLE, maybe INT, s VARCHAR) \
     WITH (connector = 'datagen', datagen.rows.per.second = 'unlimited', \
     datagen.rows.total = '10000', datagen.seed = '7', \
     fields.id.kind = 'sequence', fields.id.start = '1', \
     fields.u.min = '5', fields.u.max = '9', \
     fields.c.values = 'red,green,blue', \
     fields.n.distribution = 'normal', fields.n.mean = '20', fields.n.stddev = '5', \
     fields.maybe.null_rate = '0.25', fields.s.length = '4')";

#[tokio::test]
async fn datagen_rules_hold_and_a_seed_repeats_the_rows() {
    let server = TestServer::start();
    let client = server.client().await;
    client.batch_execute(RULES).await.unwrap();

    let first = rows(&client, "SELECT * FROM g").await;
    assert_eq!(first.len(), 10_000);
    assert_eq!(
        rows(&client, "SELECT * FROM g").await,
        first,
        "same seed, other rows"
    );
    assert_eq!(number(&client, "SELECT count(*) FROM g").await, 10_000.0);

    // A sequence: 1, 2, ... with no gaps or repeats.
    assert_eq!(
        rows(
            &client,
            "SELECT min(id), max(id), count(DISTINCT id) FROM g"
        )
        .await,
        ["1|10000|10000"]
    );
    assert_eq!(first[0].split('|').next(), Some("1"));
    // Uniform values within min..=max, every value reached.
    assert_eq!(
        rows(&client, "SELECT min(u), max(u), count(DISTINCT u) FROM g").await,
        ["5|9|5"]
    );
    // Choices only from the list.
    assert_eq!(
        rows(
            &client,
            "SELECT c, count(*) > 0 FROM g GROUP BY c ORDER BY c"
        )
        .await,
        ["blue|t", "green|t", "red|t"]
    );
    // A normal distribution around its mean (wide tolerances: 10k rows).
    let mean = number(&client, "SELECT avg(n) FROM g").await;
    assert!((mean - 20.0).abs() < 0.5, "mean {mean}");
    let stddev = number(&client, "SELECT stddev(n) FROM g").await;
    assert!((stddev - 5.0).abs() < 0.5, "stddev {stddev}");
    // About a quarter NULL; the other columns never.
    let nulls = number(&client, "SELECT count(*) FROM g WHERE maybe IS NULL").await;
    assert!((2000.0..=3000.0).contains(&nulls), "{nulls} NULLs");
    assert_eq!(
        number(
            &client,
            "SELECT count(*) FROM g WHERE u IS NULL OR s IS NULL"
        )
        .await,
        0.0
    );
    assert_eq!(
        rows(&client, "SELECT min(length(s)), max(length(s)) FROM g").await,
        ["4|4"]
    );

    // Another seed, other rows; no seed, other rows per reader.
    client
        .batch_execute(
            &RULES
                .replace("g (", "g2 (")
                .replace("seed = '7'", "seed = '8'"),
        )
        .await
        .unwrap();
    assert_ne!(rows(&client, "SELECT * FROM g2").await, first);
    client
        .batch_execute(
            "CREATE SOURCE unseeded (v BIGINT) WITH (connector = 'datagen', \
             datagen.rows.total = '50', datagen.rows.per.second = '0')",
        )
        .await
        .unwrap();
    let a = rows(&client, "SELECT * FROM unseeded").await;
    assert_eq!(a.len(), 50);
    assert_ne!(rows(&client, "SELECT * FROM unseeded").await, a);
}

#[tokio::test]
async fn datagen_event_time_advances_with_bounded_disorder() {
    let server = TestServer::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE e (id BIGINT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '0', \
               datagen.rows.total = '3000', fields.id.kind = 'sequence', \
               fields.ts.kind = 'event_time', fields.ts.start = '2024-01-01 00:00:00', \
               fields.ts.step = '10ms', fields.ts.max_disorder = '500ms'); \
             CREATE SOURCE paced (id BIGINT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '100', \
               fields.id.kind = 'sequence', fields.ts.start = '2024-01-01 00:00:00')",
        )
        .await
        .unwrap();
    let start = NaiveDateTime::parse_from_str("2024-01-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let got = within("SELECT FROM e", client.query("SELECT id, ts FROM e", &[]))
        .await
        .unwrap();
    assert_eq!(got.len(), 3000);
    let (mut disordered, mut latest) = (0, start);
    for row in &got {
        let (id, ts): (i64, NaiveDateTime) = (row.get(0), row.get(1));
        let exact = start + chrono::Duration::milliseconds(id * 10);
        let back = exact - ts;
        assert!(
            back >= chrono::Duration::zero() && back <= chrono::Duration::milliseconds(500),
            "row {id}: {ts} is {back} before {exact}"
        );
        disordered += (ts < latest) as usize;
        latest = latest.max(ts);
    }
    assert!(disordered > 100, "only {disordered} rows came out of order");

    // Throttled, no disorder: the step follows the rate (100 rows/s: 10ms).
    let got = within(
        "SELECT FROM paced",
        client.query("SELECT id, ts FROM paced LIMIT 5", &[]),
    )
    .await
    .unwrap();
    let times: Vec<(i64, NaiveDateTime)> = got.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: Vec<(i64, NaiveDateTime)> = (0..5)
        .map(|i| (i, start + chrono::Duration::milliseconds(i * 10)))
        .collect();
    assert_eq!(times, expected);
}

#[tokio::test]
async fn datagen_bad_options_are_refused_with_22023() {
    let server = TestServer::start();
    let client = server.client().await;
    let cases = [
        (
            "(id INT) WITH (connector = 'datagen', fields.nosuch.kind = 'random')",
            "22023",
            "no column \"nosuch\"",
        ),
        (
            "(id INT) WITH (connector = 'datagen', fields.id.length = '3')",
            "22023",
            "fields.id.length does not apply",
        ),
        (
            "(s TEXT) WITH (connector = 'datagen', fields.s.kind = 'sequence')",
            "22023",
            "needs a numeric column",
        ),
        (
            "(id INT) WITH (connector = 'datagen', fields.id.min = '10', fields.id.max = '1')",
            "22023",
            "is below",
        ),
        (
            "(id INT) WITH (connector = 'datagen', fields.id.values = '1,two')",
            "22023",
            "not a valid",
        ),
        (
            "(id INT) WITH (connector = 'datagen', fields.id.null_rate = '1.5')",
            "22023",
            "from 0 to 1",
        ),
        (
            "(id INT) WITH (connector = 'datagen', datagen.rows.per.second = 'fast')",
            "22023",
            "unlimited",
        ),
        (
            "(id INT) WITH (connector = 'datagen', datagen.rows.per.sec = '5')",
            "22023",
            "unknown option \"datagen.rows.per.sec\"",
        ),
        (
            "(id INT) WITH (connector = 'datagen') FORMAT JSON",
            "22023",
            "takes no FORMAT",
        ),
        (
            "(i INTERVAL) WITH (connector = 'datagen')",
            "0A000",
            "cannot make values",
        ),
        (
            "(ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (connector = 'datagen', fields.ts.null_rate = '0.1')",
            "22023",
            "cannot be NULL",
        ),
        ("WITH (connector = 'datagen')", "42601", "column list"),
    ];
    for (rest, state, message) in cases {
        let sql = format!("CREATE SOURCE bad {rest}");
        let e = client.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), state, "{sql}: {e:?}");
        let text = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(text.contains(message), "{sql}: {text}");
    }
    let e = client.batch_execute("SELECT * FROM bad").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P01", "a refused source was created: {e:?}");
    still_works(&client).await;
}

/// How many events of each kind are among the first `n`, per the crate.
fn nexmark_counts(n: usize) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for event in EventGenerator::new(NexmarkConfig::default()).take(n) {
        match event {
            Event::Person(_) => counts.0 += 1,
            Event::Auction(_) => counts.1 += 1,
            Event::Bid(_) => counts.2 += 1,
        }
    }
    counts
}

fn nexmark_source(table: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE {table} WITH (connector = 'nexmark', nexmark.table.type = '{table}', \
         nexmark.event.num = '5000', nexmark.max.chunk.size = '100'{extra})"
    )
}

#[tokio::test]
async fn nexmark_tables_share_one_finite_event_stream() {
    let server = TestServer::start();
    let client = server.client().await;
    for table in ["person", "auction", "bid"] {
        client
            .batch_execute(&nexmark_source(table, ""))
            .await
            .unwrap();
    }
    let (people, auctions, bids) = nexmark_counts(5000);
    assert!(bids > auctions && auctions > people && people > 0);
    assert_eq!(
        number(&client, "SELECT count(*) FROM bid").await,
        bids as f64
    );
    assert_eq!(
        number(&client, "SELECT count(*) FROM auction").await,
        auctions as f64
    );
    assert_eq!(
        number(&client, "SELECT count(*) FROM person").await,
        people as f64
    );

    // Ids count up from the crate's first ids; bids name auctions that
    // exist or are at most `auction_id_lead` ahead of the newest one.
    let config = NexmarkConfig::default();
    let first_auction = config.first_auction_id as f64;
    assert_eq!(
        rows(
            &client,
            "SELECT min(id), max(id), count(DISTINCT id) FROM auction"
        )
        .await,
        [format!(
            "{}|{}|{auctions}",
            config.first_auction_id,
            config.first_auction_id + auctions - 1
        )]
    );
    assert_eq!(
        rows(&client, "SELECT min(id), max(id) FROM person").await,
        [format!(
            "{}|{}",
            config.first_person_id,
            config.first_person_id + people - 1
        )]
    );
    let lowest = number(&client, "SELECT min(auction) FROM bid").await;
    let highest = number(&client, "SELECT max(auction) FROM bid").await;
    assert!(lowest >= first_auction, "bid for auction {lowest}");
    let newest = first_auction + (auctions - 1) as f64;
    assert!(
        highest <= newest + config.auction_id_lead as f64,
        "bid for auction {highest}, newest is {newest}"
    );
    // Most bids are for auctions that exist.
    let matched = number(
        &client,
        "SELECT count(*) FROM bid WHERE auction <= (SELECT max(id) FROM auction)",
    )
    .await;
    assert!(matched > bids as f64 * 0.9, "{matched} of {bids}");
}

#[tokio::test]
async fn nexmark_columns_types_and_event_time() {
    let server = TestServer::start();
    let client = server.client().await;
    client
        .batch_execute(&nexmark_source(
            "bid",
            ", nexmark.base.time = '1700000000000', nexmark.min.event.gap.in.ns = '1000000'",
        ))
        .await
        .unwrap();
    let statement = client.prepare("SELECT * FROM bid LIMIT 1").await.unwrap();
    let columns: Vec<(&str, &Type)> = statement
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_()))
        .collect();
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    assert_eq!(
        names,
        [
            "auction",
            "bidder",
            "price",
            "channel",
            "url",
            "date_time",
            "extra"
        ]
    );
    for (name, ty) in &columns {
        let ok = match *name {
            "auction" | "bidder" | "price" => **ty == Type::INT8,
            "date_time" => **ty == Type::TIMESTAMP,
            _ => [Type::TEXT, Type::VARCHAR].contains(ty),
        };
        assert!(ok, "column {name} is {ty}");
    }
    // Event n is at base + n * gap: bids are events 4..50, 54..100, ...
    assert_eq!(
        rows(&client, "SELECT min(date_time), max(date_time) FROM bid").await,
        ["2023-11-14 22:13:20.004|2023-11-14 22:13:24.999"]
    );

    // A WATERMARK without other columns; a declared subset of the columns,
    // cast to the declared types; columns that are not the table's.
    client
        .batch_execute(
            "CREATE SOURCE wm (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
               WITH (connector = 'nexmark', nexmark.table.type = 'Auction', \
               nexmark.event.num = '500'); \
             CREATE SOURCE prices (price INT, auction BIGINT) WITH (connector = 'nexmark', \
               nexmark.table.type = 'BID', nexmark.event.num = '500')",
        )
        .await
        .unwrap();
    let (_, auctions, bids) = nexmark_counts(500);
    assert_eq!(
        number(&client, "SELECT count(*) FROM wm").await,
        auctions as f64
    );
    let statement = client.prepare("SELECT * FROM prices").await.unwrap();
    let types: Vec<&Type> = statement.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(types, [&Type::INT4, &Type::INT8]);
    assert_eq!(
        number(&client, "SELECT count(*) FROM prices WHERE price > 0").await,
        bids as f64
    );
    let e = client
        .batch_execute(
            "CREATE SOURCE nope (bidder_id BIGINT) WITH (connector = 'nexmark', \
             nexmark.table.type = 'bid')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42703", "{e:?}");
    for (options, fragment) in [
        ("nexmark.table.type = 'bids'", "Person, Auction or Bid"),
        (
            "nexmark.table.type = 'bid', nexmark.seed = 'x'",
            "nexmark.seed",
        ),
        (
            "nexmark.table.type = 'bid', nexmark.event.num = 'many'",
            "nexmark.event.num",
        ),
        ("nexmark.event.num = '5'", "nexmark.table.type"),
    ] {
        let sql = format!("CREATE SOURCE nope WITH (connector = 'nexmark', {options})");
        let e = client.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "22023", "{sql}: {e:?}");
        assert!(
            e.as_db_error().unwrap().message().contains(fragment),
            "{sql}: {e:?}"
        );
    }
    still_works(&client).await;
}
