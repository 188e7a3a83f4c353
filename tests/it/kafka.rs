//! The `kafka` connector against a real Kafka-protocol broker: tansu,
//! started per test on a free port with in-memory storage, fed with rskafka.
//!
//! What is shown: every record of every partition arrives once; the start
//! modes; the metadata columns; bad records skipped (or fatal under
//! `on_error = 'fail'`); CREATE refusing an unreachable broker or a missing
//! topic; DROP SOURCE; a reader that outlives a broker restart. Without the
//! tansu binary these tests fail (scripts/test.sh installs it); they never
//! pass by skipping. Every wait is bounded and says what it waited for.

mod broker;
mod crash;
mod resume;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rskafka::record::Record;
use tokio_postgres::Row;

use self::broker::{Broker, free_port};
use crate::harness::{TestServer, sqlstate, still_works};

/// Bound on any one wait: a query, a broker start, a produce.
const TIMEOUT: Duration = Duration::from_secs(60);

impl Broker {
    /// `CREATE SOURCE name` over `topic` with the columns used here.
    fn create_sql(&self, name: &str, topic: &str, include: &str, extra: &str) -> String {
        format!(
            "CREATE SOURCE {name} (id INT, name VARCHAR, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) {include} \
             WITH (connector = 'kafka', topic = '{topic}', \
             properties.bootstrap.server = '{}'{extra}) FORMAT JSON",
            self.address()
        )
    }
}

async fn bounded<F: std::future::IntoFuture>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TIMEOUT:?}"))
}

fn good(id: i32) -> Vec<u8> {
    format!(
        r#"{{"id": {id}, "name": "n{id}", "ts": "2026-01-01T00:00:{:02}"}}"#,
        id % 60
    )
    .into_bytes()
}

fn record(value: Option<Vec<u8>>) -> Record {
    Record {
        key: None,
        value,
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

fn records(ids: impl IntoIterator<Item = i32>) -> Vec<Record> {
    ids.into_iter().map(|id| record(Some(good(id)))).collect()
}

async fn query(client: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    bounded(sql, client.query(sql, &[]))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

async fn ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i32> {
    query(client, sql).await.iter().map(|r| r.get(0)).collect()
}

fn set(ids: impl IntoIterator<Item = i32>) -> BTreeSet<i32> {
    ids.into_iter().collect()
}

/// A source's row in `runnel_catalog.sources`.
#[derive(Debug)]
struct Figures {
    state: String,
    readers: i32,
    records_in: i64,
    errors: i64,
    positions: Option<String>,
}

/// Asks `runnel_catalog.sources` until `done` holds for source `name`.
async fn wait_for(
    client: &tokio_postgres::Client,
    name: &str,
    what: &str,
    done: impl Fn(&Figures) -> bool,
) -> Figures {
    let sql = "SELECT state, readers, records_in, errors, positions \
               FROM runnel_catalog.sources WHERE name = $1";
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let row = client
            .query_one(sql, &[&name])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let figures = Figures {
            state: row.get(0),
            readers: row.get(1),
            records_in: row.get(2),
            errors: row.get(3),
            positions: row.get(4),
        };
        if done(&figures) {
            return figures;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source {name}: {what} did not happen within {TIMEOUT:?}; last seen {figures:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_record_of_every_partition_arrives_once_and_live_ones_follow() {
    let broker = Broker::start();
    broker.create_topic("events", 3).await;
    for p in 0..3 {
        broker
            .produce("events", p, records((0..10).map(|i| p * 10 + i)))
            .await;
    }
    let server = TestServer::start();
    let client = server.client().await;
    // Flink's spelling of the broker list.
    let sql = broker.create_sql("src", "events", "", "").replace(
        "properties.bootstrap.server",
        "properties.bootstrap.servers",
    );
    client.simple_query(&sql).await.unwrap();

    let got = ids(&client, "SELECT id FROM src LIMIT 30").await;
    assert_eq!(got.len(), 30, "{got:?}");
    assert_eq!(set(got), set(0..30));

    // A second reader reads from the start again, then keeps reading what
    // is produced after it started.
    let reader = {
        let client = server.client().await;
        tokio::spawn(async move { ids(&client, "SELECT id FROM src LIMIT 36").await })
    };
    for p in 0..3 {
        broker
            .produce("events", p, records([100 + p, 200 + p]))
            .await;
    }
    let got = bounded("the live SELECT", reader).await.unwrap();
    assert_eq!(got.len(), 36, "{got:?}");
    assert_eq!(set(got), set((0..30).chain([100, 101, 102, 200, 201, 202])));
}

#[tokio::test]
async fn start_modes_earliest_specific_offsets_and_latest() {
    let broker = Broker::start();
    broker.create_topic("modes", 3).await;
    for p in 0..3 {
        broker
            .produce("modes", p, records((0..5).map(|i| p * 100 + i)))
            .await;
    }
    let server = TestServer::start();
    let client = server.client().await;
    let create = |name: &str, extra: &str| broker.create_sql(name, "modes", "", extra);

    client
        .simple_query(&create("e", ", scan.startup.mode = 'earliest-offset'"))
        .await
        .unwrap();
    let all = set((0..3).flat_map(|p| (0..5).map(move |i| p * 100 + i)));
    assert_eq!(set(ids(&client, "SELECT id FROM e LIMIT 15").await), all);

    // Partition 0 from offset 2, partition 1 from 4, partition 2 (not
    // listed) from the earliest: 3 + 1 + 5 records.
    let expected = set([2, 3, 4, 104, 200, 201, 202, 203, 204]);
    for (name, offsets) in [
        ("s1", "0:2,1:4"),
        ("s2", "partition:0,offset:2;partition:1,offset:4"),
    ] {
        client
            .simple_query(&create(
                name,
                &format!(
                    ", scan.startup.mode = 'specific_offsets', \
                     scan.startup.specific_offsets = '{offsets}'"
                ),
            ))
            .await
            .unwrap();
        let got = ids(&client, &format!("SELECT id FROM {name} LIMIT 9")).await;
        assert_eq!(got.len(), 9, "{name}: {got:?}");
        assert_eq!(set(got), expected, "{name}");
    }

    // Latest: only records produced after the reader started. The reader
    // picks its start when it starts, so new records keep coming until the
    // SELECT has its rows; none of the old ones may be among them.
    client
        .simple_query(&create("l", ", scan.startup.mode = 'latest'"))
        .await
        .unwrap();
    let mut reader = {
        let client = server.client().await;
        tokio::spawn(async move { ids(&client, "SELECT id FROM l LIMIT 6").await })
    };
    let mut next = 1000;
    let got = bounded("the SELECT from latest", async {
        loop {
            for p in 0..3 {
                broker.produce("modes", p, records([next + p])).await;
            }
            next += 10;
            if let Ok(done) = tokio::time::timeout(Duration::from_millis(200), &mut reader).await {
                break done.unwrap();
            }
        }
    })
    .await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(
        got.iter().all(|id| *id >= 1000),
        "old records read: {got:?}"
    );
}

/// id, partition, offset, key, timestamp.
type MetaRow = (i32, i32, i64, Option<Vec<u8>>, DateTime<Utc>);

#[tokio::test]
async fn metadata_columns_carry_partition_offset_key_and_timestamp() {
    let broker = Broker::start();
    broker.create_topic("meta", 2).await;
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap();
    let mut expected = Vec::new();
    for p in 0..2 {
        let batch: Vec<Record> = (0..3)
            .map(|i| {
                let id = p * 10 + i;
                Record {
                    key: (i != 1).then(|| format!("k{id}").into_bytes()),
                    value: Some(good(id)),
                    headers: Default::default(),
                    timestamp: at(1_767_225_600_000 + id as i64 * 1001),
                }
            })
            .collect();
        let keys: Vec<_> = batch.iter().map(|r| r.key.clone()).collect();
        let times: Vec<_> = batch.iter().map(|r| r.timestamp).collect();
        let offsets = broker.produce("meta", p, batch).await;
        for i in 0..3 {
            expected.push((p * 10 + i as i32, p, offsets[i], keys[i].clone(), times[i]));
        }
    }
    let server = TestServer::start();
    let client = server.client().await;
    client
        .simple_query(&broker.create_sql(
            "m",
            "meta",
            "INCLUDE partition INCLUDE offset AS off INCLUDE key INCLUDE timestamp AS kts",
            "",
        ))
        .await
        .unwrap();
    let rows = query(
        &client,
        "SELECT id, _partition, off, _key, kts FROM m LIMIT 6",
    )
    .await;
    let mut got: Vec<MetaRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    got.sort_by_key(|r| r.0);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn bad_records_are_skipped_and_the_good_ones_around_them_arrive() {
    let broker = Broker::start();
    broker.create_topic("dirty", 2).await;
    let value = |v: &[u8]| record(Some(v.to_vec()));
    broker
        .produce(
            "dirty",
            0,
            vec![
                value(&good(0)),
                value(br#"{"id": 90, "ts": "2026-01-01T00:00:0"#), // cut short
                value(&good(1)),
                value(br#"{"id": "x", "ts": "2026-01-01T00:00:00"}"#), // wrong type
                value(&good(2)),
                value(br#"{"id": 91, "name": "no event time"}"#),
                value(&good(3)),
            ],
        )
        .await;
    broker
        .produce(
            "dirty",
            1,
            vec![
                value(&good(4)),
                value(b"{\"id\": 92, \"name\": \"\xff\", \"ts\": \"2026-01-01T00:00:00\"}"),
                value(&good(5)),
                record(None), // a tombstone
                value(&good(6)),
            ],
        )
        .await;
    let server = TestServer::start();
    let client = server.client().await;
    client
        .simple_query(&broker.create_sql("d", "dirty", "", ""))
        .await
        .unwrap();
    let got = ids(&client, "SELECT id FROM d LIMIT 7").await;
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(set(got), set(0..7));
    still_works(&client).await;

    // Each bad record precedes a good one of its partition, so all were
    // counted before the last good row arrived.
    let figures = wait_for(&client, "d", "the reader's end", |f| f.readers == 0).await;
    assert_eq!((figures.records_in, figures.errors), (7, 5), "{figures:?}");
    let errors: Vec<(String, i64, String)> = query(
        &client,
        "SELECT split, \"position\", error FROM runnel_catalog.source_errors \
         WHERE source = 'd' ORDER BY split, \"position\"",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let at: Vec<(&str, i64)> = errors.iter().map(|(s, p, _)| (s.as_str(), *p)).collect();
    assert_eq!(
        at,
        [
            ("partition 0", 1),
            ("partition 0", 3),
            ("partition 0", 5),
            ("partition 1", 1),
            ("partition 1", 3)
        ],
        "{errors:?}"
    );
    assert!(errors[3].2.contains("UTF-8"), "{errors:?}");
    assert_eq!(errors[4].2, "null message value");

    // A second reader counts again (figures are summed over readers) and,
    // as it keeps running, shows where each partition is: the next offset
    // to read, nothing left behind. Canceling the query ends it.
    let live = server.client().await;
    let cancel = live.cancel_token();
    let reader = tokio::spawn(async move { live.query("SELECT id FROM d LIMIT 100", &[]).await });
    let figures = wait_for(&client, "d", "reading to the end", |f| {
        f.records_in == 14
            && f.positions.as_deref() == Some("partition 0=7 (lag 0), partition 1=5 (lag 0)")
    })
    .await;
    assert_eq!((figures.state.as_str(), figures.readers), ("running", 1));
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send a cancel request");
    let err = bounded("the canceled SELECT", reader)
        .await
        .unwrap()
        .expect_err("the SELECT was canceled");
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    let figures = wait_for(&client, "d", "the reader's end", |f| f.readers == 0).await;
    assert_eq!(
        (figures.records_in, figures.errors),
        (14, 10),
        "{figures:?}"
    );
}

#[tokio::test]
async fn on_error_fail_ends_the_select_at_the_bad_record() {
    let broker = Broker::start();
    broker.create_topic("strict", 1).await;
    broker
        .produce(
            "strict",
            0,
            vec![
                record(Some(good(0))),
                record(Some(b"not json".to_vec())),
                record(Some(good(1))),
            ],
        )
        .await;
    let server = TestServer::start();
    let client = server.client().await;
    client
        .simple_query(&broker.create_sql("s", "strict", "", ", on_error = 'fail'"))
        .await
        .unwrap();
    let err = bounded(
        "the failing SELECT",
        client.query("SELECT id FROM s LIMIT 10", &[]),
    )
    .await
    .expect_err("a bad record under on_error = 'fail' must fail the SELECT");
    assert_eq!(sqlstate(&err), "22P02", "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("bad record") && message.contains("partition 0 at position 1"),
        "{message}"
    );
    still_works(&client).await;
}

#[tokio::test]
async fn create_refuses_an_unreachable_broker_and_a_missing_topic() {
    let broker = Broker::start();
    broker.create_topic("present", 2).await;
    let server = TestServer::start();
    let client = server.client().await;

    let closed = format!("127.0.0.1:{}", free_port());
    let sql = format!(
        "CREATE SOURCE k (id INT) WITH (connector = 'kafka', topic = 'present', \
         properties.bootstrap.server = '{closed}') FORMAT JSON"
    );
    let err = bounded("CREATE SOURCE with no broker", client.simple_query(&sql))
        .await
        .expect_err("no broker listens there");
    assert_eq!(sqlstate(&err), "08001", "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains(&closed), "{message}");

    let cases = [
        (
            broker.create_sql("k", "absent", "", ""),
            "42704",
            format!("topic \"absent\" does not exist on {}", broker.address()),
        ),
        (
            broker.create_sql(
                "k",
                "present",
                "",
                ", scan.startup.mode = 'specific_offsets', scan.startup.specific_offsets = '7:1'",
            ),
            "22023",
            "names partition 7".to_string(),
        ),
        (
            broker.create_sql("k", "present", "", ", scan.startup.mode = 'group-offsets'"),
            "22023",
            "scan.startup.mode".to_string(),
        ),
        (
            broker.create_sql("k", "present", "INCLUDE file", ""),
            "22023",
            "has no metadata \"file\"".to_string(),
        ),
        (
            "CREATE SOURCE k (id INT) WITH (connector = 'kafka', topic = 't') FORMAT JSON"
                .to_string(),
            "22023",
            "needs the option properties.bootstrap.server".to_string(),
        ),
    ];
    for (sql, code, text) in cases {
        let err = bounded(&sql, client.simple_query(&sql))
            .await
            .expect_err(&sql);
        assert_eq!(sqlstate(&err), code, "{sql}: {err:?}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains(&text), "{sql}: {message}");
    }
    let err = client.simple_query("SELECT * FROM k").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42P01",
        "nothing may be left behind: {err:?}"
    );
}

#[tokio::test]
async fn a_dropped_source_is_gone_and_its_name_free() {
    let broker = Broker::start();
    broker.create_topic("t", 1).await;
    broker.produce("t", 0, records(0..3)).await;
    let server = TestServer::start();
    let client = server.client().await;
    client
        .simple_query(&broker.create_sql("src", "t", "", ""))
        .await
        .unwrap();
    assert_eq!(
        set(ids(&client, "SELECT id FROM src LIMIT 3").await),
        set(0..3)
    );
    client.simple_query("DROP SOURCE src").await.unwrap();
    let err = client.simple_query("SELECT id FROM src").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err:?}");
    client
        .simple_query(
            &broker
                .create_sql("src", "t", "", "")
                .replace("properties.bootstrap.server", "bootstrap.servers"),
        )
        .await
        .expect("the name is free again");
    assert_eq!(
        set(ids(&client, "SELECT id FROM src LIMIT 3").await),
        set(0..3)
    );
}

#[tokio::test]
async fn a_reader_outlives_a_broker_restart() {
    let mut broker = Broker::start();
    broker.create_topic("flaky", 1).await;
    broker.produce("flaky", 0, records(0..3)).await;
    let server = TestServer::start();
    let client = server.client().await;
    client
        .simple_query(&broker.create_sql("f", "flaky", "", ""))
        .await
        .unwrap();
    let reader = {
        let client = server.client().await;
        tokio::spawn(async move { ids(&client, "SELECT id FROM f WHERE id >= 105 LIMIT 5").await })
    };
    // The broker dies and comes back empty (its storage is in memory); the
    // topic is made again and filled with ids 100..110 at offsets 0..10.
    // Whether or not the reader had read offsets 0..3 before, ids 105..110
    // are ahead of it.
    wait_for(&client, "f", "a reader", |f| f.readers == 1).await;
    broker.kill();
    wait_for(&client, "f", "retrying", |f| {
        f.state.starts_with("retrying: ")
    })
    .await;
    broker.start_again();
    broker.create_topic("flaky", 1).await;
    broker.produce("flaky", 0, records(100..110)).await;
    let got = bounded("the SELECT across the restart", reader)
        .await
        .unwrap();
    assert_eq!(got, vec![105, 106, 107, 108, 109]);
    // Back to running once the broker answered (a reader that ends while
    // still retrying would leave its retry state behind).
    let figures = wait_for(&client, "f", "the reader's end", |f| f.readers == 0).await;
    assert_eq!(figures.state, "idle");
}
