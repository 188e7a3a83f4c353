//! What survives a restart of the server on the same data directory: table
//! rows and definitions after a graceful SIGTERM and after SIGKILL, views,
//! and the absence of dropped objects.

use chrono::{NaiveDate, NaiveDateTime};

use crate::harness::{TestServer, column, sqlstate};

fn texts(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

async fn create_and_fill(server: &TestServer) {
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT, name TEXT, ts TIMESTAMP); \
             INSERT INTO t VALUES (1, 'a', TIMESTAMP '2024-01-01 00:00:00'), (2, 'b', NULL); \
             INSERT INTO t SELECT value, 'gen', NULL FROM generate_series(3, 1000)",
        )
        .await
        .unwrap();
    // COPY is another way in; its rows must be just as durable.
    let sink = client
        .copy_in("COPY t (id, name) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    futures::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1001,copied\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
}

async fn assert_rows_back(server: &TestServer) {
    let client = server.client().await;
    assert_eq!(
        column(&client, "SELECT count(*) FROM t").await,
        texts(&["1001"])
    );
    let rows: Vec<(i64, String, Option<NaiveDateTime>)> = client
        .query(
            "SELECT id, name, ts FROM t WHERE id IN (1, 2, 1001) ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let ts = NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    assert_eq!(
        rows,
        [
            (1, "a".to_string(), Some(ts)),
            (2, "b".to_string(), None),
            (1001, "copied".to_string(), None)
        ]
    );
    // The table is writable again after the restart.
    client
        .batch_execute("INSERT INTO t (id, name) VALUES (2000, 'after')")
        .await
        .unwrap();
    assert_eq!(
        column(&client, "SELECT count(*) FROM t").await,
        texts(&["1002"])
    );
}

#[tokio::test]
async fn rows_survive_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    create_and_fill(&server).await;
    let status = server.stop().await;
    assert!(
        status.success(),
        "SIGTERM should shut down cleanly, got {status}\n{}",
        server.stderr()
    );

    let mut server = TestServer::start_in(dir.path(), &[]);
    assert_rows_back(&server).await;
    // And once more, so the rows written after the first restart count too.
    server.stop().await;
    let server = TestServer::start_in(dir.path(), &[]);
    let client = server.client().await;
    assert_eq!(
        column(&client, "SELECT count(*) FROM t").await,
        texts(&["1002"])
    );
}

#[tokio::test]
async fn acknowledged_rows_survive_kill9() {
    // The first server owns the data directory; it outlives the process.
    let mut first = TestServer::start();
    create_and_fill(&first).await;
    first.kill9();

    let second = TestServer::start_in(first.data_dir(), &[]);
    assert_rows_back(&second).await;
}

#[tokio::test]
async fn drops_and_views_persist() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    {
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE TABLE keep (a INT); INSERT INTO keep VALUES (1), (2), (3); \
                 CREATE TABLE gone (a INT); INSERT INTO gone VALUES (1); \
                 CREATE VIEW big AS SELECT a * 10 AS b FROM keep WHERE a > 1; \
                 CREATE VIEW dropped_view AS SELECT 1 AS x; \
                 DROP TABLE gone; DROP VIEW dropped_view",
            )
            .await
            .unwrap();
    }
    server.stop().await;

    let mut server = TestServer::start_in(dir.path(), &[]);
    {
        let client = server.client().await;
        assert_eq!(
            column(&client, "SELECT b FROM big ORDER BY b").await,
            texts(&["20", "30"])
        );
        let e = client.simple_query("SELECT * FROM gone").await.unwrap_err();
        assert_eq!(sqlstate(&e), "42P01", "{e:?}");
        let e = client
            .simple_query("SELECT * FROM dropped_view")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42P01", "{e:?}");
        // The dropped name is free again, and the new table starts empty.
        client
            .batch_execute("CREATE TABLE gone (z TEXT)")
            .await
            .unwrap();
        assert_eq!(
            column(&client, "SELECT count(*) FROM gone").await,
            texts(&["0"])
        );
        client
            .batch_execute("INSERT INTO keep VALUES (4)")
            .await
            .unwrap();
    }
    server.kill9();

    let server = TestServer::start_in(dir.path(), &[]);
    let client = server.client().await;
    // The view reads the table's current rows, not a copy from its creation.
    assert_eq!(
        column(&client, "SELECT b FROM big ORDER BY b").await,
        texts(&["20", "30", "40"])
    );
    assert_eq!(
        column(
            &client,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'gone'"
        )
        .await,
        texts(&["z"])
    );
}
