//! Live results over the wire: SUBSCRIBE and continuous SELECTs stream rows
//! while the statement runs, through tokio-postgres (extended and simple
//! protocol), COPY, cursors, psql and psycopg, and end only when the client
//! cancels or goes away, freeing what they held.
//!
//! Every row checked here is the last one that exists when it is awaited:
//! nothing more is written until it has arrived, so it can only arrive if
//! the server sent it on its own, not because a buffer filled or the
//! statement ended. Time is driven by the data and FLUSH; timeouts only
//! turn a hang into a failure.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::NaiveDateTime;
use futures::{Stream, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage};

use crate::harness::{TestServer, column, sqlstate, still_works};
use crate::views::{COLUMNS, T0, append, line};

/// Longer than anything here should take; only to fail instead of hang.
const TIMEOUT: Duration = Duration::from_secs(60);

const NO_PARAMS: [&(dyn ToSql + Sync); 0] = [];

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {TIMEOUT:?}"))
}

fn at(seconds: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_micros(T0 + seconds * 1_000_000)
        .unwrap()
        .naive_utc()
}

/// A following file source `r` at `path` and the windowed view `w` over it
/// (5 s windows, closed 2 s of event time after their end).
async fn windowed_view(client: &Client, path: &Path) {
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE MATERIALIZED VIEW w AS SELECT window_start, sensor_id, count(*) AS n FROM r \
                 GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id; \
             FLUSH",
            path.display()
        ))
        .await
        .unwrap();
}

/// Appends `lines` and waits until every view has applied them.
async fn write(client: &Client, path: &Path, lines: &[String]) {
    append(path, lines);
    within("FLUSH", client.batch_execute("FLUSH"))
        .await
        .unwrap();
}

async fn subscribers(client: &Client, view: &str) -> i64 {
    client
        .query_one(
            "SELECT subscribers FROM runnel_catalog.materialized_views WHERE name = $1",
            &[&view],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls until `view` has `n` subscribers: for the progress of another
/// connection (a subscription starting, a hangup noticed), never for rows.
async fn until_subscribers(client: &Client, view: &str, n: i64) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while subscribers(client, view).await != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{view} did not reach {n} subscribers within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next row of a streaming query.
async fn next_row(
    rows: &mut (impl Stream<Item = Result<Row, tokio_postgres::Error>> + Unpin),
) -> Row {
    within("the next row", rows.next())
        .await
        .expect("the statement ended")
        .expect("a row")
}

/// The next data row of a simple-protocol stream, as text.
async fn next_text(
    messages: &mut (impl Stream<Item = Result<SimpleQueryMessage, tokio_postgres::Error>> + Unpin),
) -> Vec<String> {
    loop {
        match within("the next row", messages.next())
            .await
            .expect("the statement ended")
            .expect("a message")
        {
            SimpleQueryMessage::Row(r) => {
                return (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect();
            }
            SimpleQueryMessage::RowDescription(_) => {}
            SimpleQueryMessage::CommandComplete(n) => panic!("the statement ended after {n} rows"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn window_row(row: &Row) -> (NaiveDateTime, i32, i64) {
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn subscribe_streams_the_snapshot_then_changes_until_the_client_cancels() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(
        &path,
        &[
            line(1, 20.0, T0),
            line(1, 21.0, T0 + 1_000_000),
            line(2, 22.0, T0 + 8_000_000),
        ],
    );
    windowed_view(&control, &path).await;

    let client = server.client().await;
    let rows = within("SUBSCRIBE", client.query_raw("SUBSCRIBE TO w", NO_PARAMS))
        .await
        .unwrap();
    futures::pin_mut!(rows);
    // The snapshot: the one closed window.
    let first = next_row(&mut rows).await;
    let names: Vec<&str> = first.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["window_start", "sensor_id", "n"]);
    assert_eq!(window_row(&first), (at(0), 1, 2));
    assert_eq!(subscribers(&control, "w").await, 1);
    // A change arrives while the statement runs: the next window closes.
    write(
        &control,
        &path,
        &[
            line(2, 23.0, T0 + 9_000_000),
            line(3, 20.0, T0 + 13_000_000),
        ],
    )
    .await;
    let second = next_row(&mut rows).await;
    assert_eq!(window_row(&second), (at(5), 2, 2));
    // Snapshot + changes are exactly the view.
    let view: Vec<_> = control
        .query("SELECT * FROM w ORDER BY window_start", &[])
        .await
        .unwrap()
        .iter()
        .map(window_row)
        .collect();
    assert_eq!(view, [window_row(&first), window_row(&second)]);

    // Only the client ends it: a CancelRequest gives 57014 and frees the
    // subscription before the error is sent.
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = within("the canceled SUBSCRIBE", rows.next())
        .await
        .expect("an error ends the stream")
        .expect_err("the SUBSCRIBE was canceled");
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    assert_eq!(subscribers(&control, "w").await, 0);
    still_works(&client).await;
    still_works(&server.client().await).await;
}

#[tokio::test]
async fn a_hangup_mid_subscription_frees_it_and_other_subscribers_go_on() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(2, 20.0, T0 + 8_000_000)]);
    windowed_view(&control, &path).await;

    // One subscriber on the simple protocol, without the snapshot; one on
    // the extended protocol, with it.
    // Its connection task is ours to abort: dropping a tokio-postgres client
    // with a statement in flight keeps the socket open.
    let (leaving, connection) = server.config().connect(NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let simple = leaving
        .simple_query_raw("SUBSCRIBE w WITH (snapshot = false)")
        .await
        .unwrap();
    futures::pin_mut!(simple);
    let staying = server.client().await;
    let rows = staying
        .query_raw("SUBSCRIBE TO w", NO_PARAMS)
        .await
        .unwrap();
    futures::pin_mut!(rows);
    assert_eq!(window_row(&next_row(&mut rows).await), (at(0), 1, 1));
    until_subscribers(&control, "w", 2).await;

    write(&control, &path, &[line(3, 20.0, T0 + 13_000_000)]).await;
    // Without the snapshot, the first row is the change.
    assert_eq!(
        next_text(&mut simple).await,
        ["2026-11-21 10:00:05", "2", "1"]
    );
    assert_eq!(window_row(&next_row(&mut rows).await), (at(5), 2, 1));

    // The first client goes away mid-statement, without a word: the server
    // notices, though the view has nothing new to send it.
    connection.abort();
    let _ = connection.await;
    drop(leaving);
    until_subscribers(&control, "w", 1).await;
    // The other subscription is undisturbed.
    write(&control, &path, &[line(4, 20.0, T0 + 18_000_000)]).await;
    assert_eq!(window_row(&next_row(&mut rows).await), (at(10), 3, 1));
    staying.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = within("the canceled SUBSCRIBE", rows.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert_eq!(subscribers(&control, "w").await, 0);
}

#[tokio::test]
async fn an_updating_view_streams_inserts_and_deletes() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(1, 21.0, T0)]);
    control
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE MATERIALIZED VIEW per_sensor AS SELECT sensor_id, count(*) AS n FROM r GROUP BY sensor_id; \
             FLUSH",
            path.display()
        ))
        .await
        .unwrap();
    let client = server.client().await;
    let rows = client
        .query_raw("SUBSCRIBE TO per_sensor", NO_PARAMS)
        .await
        .unwrap();
    futures::pin_mut!(rows);
    let op_row = |r: &Row| -> (i32, i64, String) { (r.get(0), r.get(1), r.get(2)) };
    let first = next_row(&mut rows).await;
    let names: Vec<&str> = first.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["sensor_id", "n", "op"]);
    assert_eq!(op_row(&first), (1, 2, "insert".into()));
    // An update is a delete of the old row and an insert of the new one.
    write(&control, &path, &[line(1, 22.0, T0)]).await;
    let mut update = vec![
        op_row(&next_row(&mut rows).await),
        op_row(&next_row(&mut rows).await),
    ];
    update.sort();
    assert_eq!(update, [(1, 2, "delete".into()), (1, 3, "insert".into())]);
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = within("the canceled SUBSCRIBE", rows.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
}

#[tokio::test]
async fn a_continuous_select_sends_each_row_as_it_arrives() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.json");
    append(&path, &[line(1, 20.0, T0)]);
    control
        .batch_execute(&format!(
            "CREATE SOURCE live {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE SOURCE slow (id BIGINT) WITH (connector = 'datagen', \
                 datagen.rows.per.second = '1', fields.id.kind = 'sequence', fields.id.start = '1')",
            path.display()
        ))
        .await
        .unwrap();

    // One row exists and the source never ends: the row can only arrive
    // because it was flushed on its own.
    let client = server.client().await;
    let rows = client
        .query_raw(
            "SELECT sensor_id FROM live WHERE temperature > 0",
            NO_PARAMS,
        )
        .await
        .unwrap();
    futures::pin_mut!(rows);
    assert_eq!(next_row(&mut rows).await.get::<_, i32>(0), 1);
    append(&path, &[line(2, 21.0, T0 + 1_000_000)]);
    assert_eq!(next_row(&mut rows).await.get::<_, i32>(0), 2);
    // The simple protocol too.
    let simple_client = server.client().await;
    let simple = simple_client
        .simple_query_raw("SELECT sensor_id FROM live")
        .await
        .unwrap();
    futures::pin_mut!(simple);
    assert_eq!(next_text(&mut simple).await, ["1"]);
    assert_eq!(next_text(&mut simple).await, ["2"]);
    append(&path, &[line(3, 22.0, T0 + 2_000_000)]);
    assert_eq!(next_text(&mut simple).await, ["3"]);
    assert_eq!(next_row(&mut rows).await.get::<_, i32>(0), 3);
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = within("the canceled SELECT", rows.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    still_works(&client).await;

    // A generator making one row a second: a buffer of rows this small
    // would take many minutes to fill.
    let rows = client
        .query_raw("SELECT id FROM slow", NO_PARAMS)
        .await
        .unwrap();
    futures::pin_mut!(rows);
    assert_eq!(next_row(&mut rows).await.get::<_, i64>(0), 1);
    assert_eq!(next_row(&mut rows).await.get::<_, i64>(0), 2);
}

#[tokio::test]
async fn copy_and_cursors_read_a_subscription() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(2, 20.0, T0 + 8_000_000)]);
    windowed_view(&control, &path).await;

    // COPY (SUBSCRIBE ...) TO STDOUT: one CopyData per row, as it comes.
    let client = server.client().await;
    let copy = client
        .copy_out("COPY (SUBSCRIBE TO w) TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(copy);
    let mut next_line = async || {
        let data = within("the next COPY row", copy.next())
            .await
            .expect("the COPY ended")
            .expect("COPY data");
        String::from_utf8(data.to_vec()).unwrap()
    };
    assert_eq!(next_line().await, "2026-11-21 10:00:00,1,1\n");
    write(&control, &path, &[line(3, 20.0, T0 + 13_000_000)]).await;
    assert_eq!(next_line().await, "2026-11-21 10:00:05,2,1\n");
    client.cancel_token().cancel_query(NoTls).await.unwrap();
    let err = within("the canceled COPY", copy.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    still_works(&client).await;

    // A cursor: FETCH returns what is there and waits for what is not.
    client
        .batch_execute("DECLARE c CURSOR FOR SUBSCRIBE TO w")
        .await
        .unwrap();
    let fetch = async |client: &Client, n: u32| -> Vec<Option<String>> {
        within("FETCH", column(client, &format!("FETCH {n} FROM c"))).await
    };
    assert_eq!(
        fetch(&client, 1).await,
        [Some("2026-11-21 10:00:00".into())]
    );
    assert_eq!(
        fetch(&client, 1).await,
        [Some("2026-11-21 10:00:05".into())]
    );
    // The row is written while (or before) the FETCH waits; either way the
    // cursor's subscription has it.
    let client = std::sync::Arc::new(client);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { column(&client, "FETCH 1 FROM c").await }
    });
    write(&control, &path, &[line(4, 20.0, T0 + 18_000_000)]).await;
    assert_eq!(
        within("the waiting FETCH", waiting).await.unwrap(),
        [Some("2026-11-21 10:00:10".into())]
    );

    // A FETCH canceled while it waits keeps the rows it had read: one row
    // is there, FETCH 2 waits for a second and is canceled; the next FETCH
    // 2 returns that row and the one written after.
    write(&control, &path, &[line(5, 20.0, T0 + 23_000_000)]).await;
    let token = client.cancel_token();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.simple_query("FETCH 2 FROM c").await }
    });
    // A cancel that arrives before the FETCH runs is ignored; it is sent
    // again until the FETCH ends (bounded).
    let mut waiting = std::pin::pin!(waiting);
    let mut result = None;
    for _ in 0..600 {
        token.cancel_query(NoTls).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), &mut waiting).await {
            result = Some(r.unwrap());
            break;
        }
    }
    let err = result.expect("the FETCH was not canceled").unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    write(&control, &path, &[line(6, 20.0, T0 + 28_000_000)]).await;
    assert_eq!(
        fetch(&*client, 2).await,
        [
            Some("2026-11-21 10:00:15".into()),
            Some("2026-11-21 10:00:20".into())
        ]
    );
    client.batch_execute("CLOSE c").await.unwrap();
    assert_eq!(subscribers(&control, "w").await, 0);
}

#[tokio::test]
async fn what_cannot_be_subscribed_to_is_refused_with_its_sqlstate() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[]);
    windowed_view(&client, &path).await;
    client
        .batch_execute("CREATE TABLE t (a INT); CREATE VIEW plain AS SELECT a FROM t")
        .await
        .unwrap();
    for (sql, state, message) in [
        (
            "SUBSCRIBE TO nope",
            "42P01",
            "relation \"nope\" does not exist",
        ),
        (
            "SUBSCRIBE t",
            "42809",
            "it is a table, not a materialized view",
        ),
        (
            "SUBSCRIBE TO plain",
            "42809",
            "it is a view, not a materialized view",
        ),
        (
            "SUBSCRIBE TO r",
            "42809",
            "it is a source, not a materialized view",
        ),
        (
            "SUBSCRIBE TO (SELECT * FROM w)",
            "0A000",
            "create a materialized view",
        ),
        (
            "SUBSCRIBE TO w WITH (progress = true)",
            "22023",
            "unknown SUBSCRIBE option",
        ),
        (
            "DECLARE c CURSOR FOR SUBSCRIBE TO nope",
            "42P01",
            "does not exist",
        ),
        (
            "COPY (SUBSCRIBE TO t) TO STDOUT",
            "42809",
            "not a materialized view",
        ),
    ] {
        for extended in [false, true] {
            let err = if extended {
                client.query(sql, &[]).await.unwrap_err()
            } else {
                client.simple_query(sql).await.unwrap_err()
            };
            assert_eq!(sqlstate(&err), state, "{sql}: {err:?}");
            let text = err.as_db_error().unwrap().message();
            assert!(text.contains(message), "{sql}: {text}");
        }
    }
    still_works(&client).await;
}

#[tokio::test]
async fn a_subscription_ends_when_its_view_ends_or_is_dropped() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(2, 20.0, T0 + 8_000_000)]);
    windowed_view(&control, &path).await;
    // A view over a finite source ends: its SUBSCRIBE completes normally.
    let finite = dir.path().join("finite.json");
    append(&finite, &[line(7, 20.0, T0)]);
    control
        .batch_execute(&format!(
            "CREATE SOURCE fin {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE MATERIALIZED VIEW ended AS SELECT sensor_id FROM fin; FLUSH",
            finite.display()
        ))
        .await
        .unwrap();
    let ended = within(
        "SUBSCRIBE to a finished view",
        control.simple_query("SUBSCRIBE ended"),
    )
    .await
    .unwrap();
    assert_eq!(crate::harness::summarize(&ended), ["7", "complete 1"]);

    // A view dropped under its subscriber ends the subscription with 42P01.
    let client = server.client().await;
    let rows = client.query_raw("SUBSCRIBE TO w", NO_PARAMS).await.unwrap();
    futures::pin_mut!(rows);
    assert_eq!(window_row(&next_row(&mut rows).await), (at(0), 1, 1));
    control
        .batch_execute("DROP MATERIALIZED VIEW w")
        .await
        .unwrap();
    let err = within("the SUBSCRIBE of a dropped view", rows.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err:?}");
    assert!(err.as_db_error().unwrap().message().contains("was dropped"));
    still_works(&client).await;
}

/// psql, run with stdout piped and read line by line as it prints.
struct Psql {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Psql {
    /// `stdbuf -oL`: psql writes COPY data through stdio, which a pipe
    /// (unlike a terminal) would hold until 4 KiB gathered.
    fn spawn(server: &TestServer, line_buffered: bool, args: &[&str]) -> Psql {
        let mut command = if line_buffered {
            let mut c = Command::new("stdbuf");
            c.args(["-oL", "psql"]);
            c
        } else {
            Command::new("psql")
        };
        let mut child = command
            .args(["-d", &server.connection_string(), "-X", "-q", "-t"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "30")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql (is postgresql-client installed? run scripts/test.sh)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Psql { child, lines }
    }

    /// The next line psql printed, without padding.
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(TIMEOUT)
            .expect("psql printed no line within the timeout")
            .trim()
            .to_string()
    }

    /// Ctrl-C: psql sends a CancelRequest; returns its stderr once it exits.
    fn interrupt(mut self) -> String {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut stderr).unwrap();
        self.child.wait().unwrap();
        stderr
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn psql_reads_live_results_with_fetch_count_cursors_and_copy() {
    let server = TestServer::start();
    let control = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(2, 20.0, T0 + 8_000_000)]);
    windowed_view(&control, &path).await;

    // \set FETCH_COUNT 1: psql reads a continuous SELECT through a cursor,
    // a row per FETCH, and prints each as it comes. (Aligned output: the
    // unaligned format ends a row only when the next one starts.)
    let psql = Psql::spawn(
        &server,
        false,
        &["-c", "\\set FETCH_COUNT 1", "-c", "SELECT sensor_id FROM r"],
    );
    assert_eq!(psql.next_line(), "1");
    assert_eq!(psql.next_line(), "2");
    append(&path, &[line(3, 20.0, T0 + 13_000_000)]);
    assert_eq!(psql.next_line(), "3");
    let stderr = psql.interrupt();
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );

    // A SUBSCRIBE through a cursor with FETCH_COUNT set.
    let psql = Psql::spawn(
        &server,
        false,
        &[
            "-A",
            "-c",
            "\\set FETCH_COUNT 1",
            "-c",
            "DECLARE c CURSOR FOR SUBSCRIBE TO w",
            "-c",
            "FETCH 2 FROM c",
            "-c",
            "FETCH 1 FROM c",
        ],
    );
    assert_eq!(psql.next_line(), "2026-11-21 10:00:00|1|1");
    assert_eq!(psql.next_line(), "2026-11-21 10:00:05|2|1");
    until_subscribers(&control, "w", 1).await;
    write(&control, &path, &[line(4, 20.0, T0 + 18_000_000)]).await;
    assert_eq!(psql.next_line(), "2026-11-21 10:00:10|3|1");
    drop(psql);

    // COPY (SUBSCRIBE ...) TO STDOUT: rows while the COPY runs, then Ctrl-C.
    until_subscribers(&control, "w", 0).await;
    let psql = Psql::spawn(&server, true, &["-c", "COPY (SUBSCRIBE TO w) TO STDOUT"]);
    assert_eq!(psql.next_line(), "2026-11-21 10:00:00\t1\t1");
    assert_eq!(psql.next_line(), "2026-11-21 10:00:05\t2\t1");
    assert_eq!(psql.next_line(), "2026-11-21 10:00:10\t3\t1");
    until_subscribers(&control, "w", 1).await;
    write(&control, &path, &[line(5, 20.0, T0 + 23_000_000)]).await;
    assert_eq!(psql.next_line(), "2026-11-21 10:00:15\t4\t1");
    let stderr = psql.interrupt();
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert_eq!(subscribers(&control, "w").await, 0);
}

#[test]
fn psycopg_streams_a_continuous_select_and_a_subscription() {
    crate::python::run_script("psycopg3_stream.py");
}
