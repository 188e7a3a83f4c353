//! CREATE SOURCE as a statement: what is refused (with which SQLSTATE and
//! without leaving anything behind), what reading a source directly does,
//! and what survives a restart. The transports themselves are tested in
//! their own modules (kafka, file_source, tcp, generators).

use std::io::Write;
use std::time::Duration;

use crate::harness::{TestServer, column, sqlstate, still_works};

const TIMEOUT: Duration = Duration::from_secs(30);

fn readings_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("readings.json");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..10 {
        writeln!(
            f,
            r#"{{"sensor_id": {}, "temperature": {}.5, "ts": "2026-11-21 10:00:{:02}"}}"#,
            i % 3,
            20 + i,
            i
        )
        .unwrap();
    }
    writeln!(f, "this line is not json").unwrap();
    path
}

fn create_sql(name: &str, path: &std::path::Path, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
         WITH (connector = 'file', path = '{}'{extra}) FORMAT JSON",
        path.display()
    )
}

#[tokio::test]
async fn bad_ddl_is_refused_with_its_sqlstate_and_creates_nothing() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = readings_file(dir.path());
    let path = file.display();
    let cases = [
        (
            format!("CREATE SOURCE s (a INT) WITH (connector = 'nope', path = '{path}') FORMAT JSON"),
            "42704",
            "connector \"nope\" does not exist",
        ),
        (
            format!("CREATE SOURCE s (a INT) WITH (connector = 'file', path = '{path}') FORMAT XML"),
            "22023",
            "format \"xml\"",
        ),
        (
            "CREATE SOURCE s (a INT) WITH (connector = 'file') FORMAT JSON".to_string(),
            "22023",
            "needs the option path",
        ),
        (
            format!(
                "CREATE SOURCE s (a INT) WITH (connector = 'file', path = '{path}', folow = 'true') FORMAT JSON"
            ),
            "22023",
            "unknown option \"folow\"",
        ),
        (
            format!(
                "CREATE SOURCE s (a INT, WATERMARK FOR a AS a) WITH (connector = 'file', path = '{path}') FORMAT JSON"
            ),
            "42804",
            "event time must be a TIMESTAMP",
        ),
        (
            format!(
                "CREATE SOURCE s (a INT, WATERMARK FOR b AS b) WITH (connector = 'file', path = '{path}') FORMAT JSON"
            ),
            "42703",
            "no such column",
        ),
        (
            "CREATE SOURCE s (a INT) WITH (connector = 'file', path = '/no/such/file.json') FORMAT JSON"
                .to_string(),
            "22023",
            "could not read \"/no/such/file.json\"",
        ),
        (
            format!("CREATE SOURCE s (a INT) WITH (connector = 'file', path = '{path}')"),
            "22023",
            "needs a format",
        ),
        (
            format!(
                "CREATE SOURCE s (a INT) INCLUDE partition WITH (connector = 'file', path = '{path}') FORMAT JSON"
            ),
            "22023",
            "has no metadata \"partition\"",
        ),
        (
            format!("CREATE SOURCE s (a INT) WITH (connector = 'file', path = '{path}') FORMAT RAW"),
            "42P16",
            "FORMAT RAW",
        ),
        (
            format!("CREATE SOURCE s WITH (connector = 'file', path = '{path}') FORMAT JSON"),
            "42601",
            "needs a column list",
        ),
        (
            format!(
                "CREATE SOURCE s (a INT) WITH (connector = 'file', path = '{path}', on_error = 'maybe') FORMAT JSON"
            ),
            "22023",
            "on_error",
        ),
        (
            "CREATE SOURCE s (a INT WITH (connector = 'file')".to_string(),
            "42601",
            "",
        ),
    ];
    for (sql, code, message) in cases {
        let err = client
            .simple_query(&sql)
            .await
            .expect_err(&format!("{sql} should fail"));
        assert_eq!(sqlstate(&err), code, "{sql}: {err:?}");
        let text = err.as_db_error().unwrap().message().to_string();
        assert!(text.contains(message), "{sql}: {text}");
    }
    assert!(column(&client, "SHOW SOURCES").await.is_empty());
    still_works(&client).await;

    client
        .simple_query(&create_sql("r", &file, ""))
        .await
        .unwrap();
    let err = client
        .simple_query(&create_sql("r", &file, ""))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P07");
    let notice = client
        .simple_query(&create_sql("r", &file, "").replace("SOURCE r", "SOURCE IF NOT EXISTS r"))
        .await;
    assert!(notice.is_ok());
    let err = client.simple_query("DROP TABLE r").await.unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("source"),
        "{err:?}"
    );
    client.simple_query("DROP SOURCE r").await.unwrap();
    let err = client.simple_query("DROP SOURCE r").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
    client
        .simple_query("DROP SOURCE IF EXISTS r")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_finite_source_answers_any_query_and_a_live_one_streams() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let file = readings_file(dir.path());
    client
        .simple_query(&create_sql("r", &file, ""))
        .await
        .unwrap();
    // A file read to its end is finite: aggregates and ORDER BY work, and
    // the bad last line is skipped, not fatal.
    let rows = client
        .query(
            "SELECT sensor_id, count(*), max(temperature) FROM r GROUP BY sensor_id ORDER BY sensor_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, i64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, vec![(0, 4, 29.5), (1, 3, 27.5), (2, 3, 28.5)]);
    // A view over a source is a stored query over it.
    client
        .simple_query(
            "CREATE VIEW hot AS SELECT sensor_id, temperature FROM r WHERE temperature > 25",
        )
        .await
        .unwrap();
    assert_eq!(
        column(&client, "SELECT count(*) FROM hot").await,
        vec![Some("5".to_string())]
    );

    client
        .simple_query(&create_sql("live", &file, ", follow = 'true'"))
        .await
        .unwrap();
    // A live source streams; LIMIT ends the statement.
    let rows = tokio::time::timeout(
        TIMEOUT,
        client.query(
            "SELECT sensor_id FROM live WHERE sensor_id = 1 LIMIT 3",
            &[],
        ),
    )
    .await
    .expect("LIMIT over a live source must end")
    .unwrap();
    assert_eq!(rows.len(), 3);
    // Computed columns of a live source (one batch here) come back as read.
    let temps: Vec<f64> = client
        .query(
            "SELECT temperature * 2 FROM live WHERE temperature > 0 LIMIT 10",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        temps,
        (0..10).map(|i| (41 + 2 * i) as f64).collect::<Vec<_>>()
    );
    // What cannot finish over a never-ending input is refused up front.
    for sql in [
        "SELECT count(*) FROM live",
        "SELECT * FROM live ORDER BY ts",
    ] {
        let err = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "{sql}: {err:?}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains("live source never ends"), "{message}");
        assert!(
            message.len() < 400,
            "the message must not dump the plan: {message}"
        );
    }
    // A live SELECT without LIMIT runs until the client cancels it. The
    // cancel is sent once the query's reader is attached, so it cannot
    // arrive before the query.
    let watcher = server.client().await;
    let readers = "SELECT readers FROM runnel_catalog.sources WHERE name = 'live'";
    eventually(&watcher, &format!("SELECT ({readers}) = 0")).await;
    let cancel = client.cancel_token();
    let canceller = tokio::spawn(async move {
        eventually(&watcher, &format!("SELECT ({readers}) > 0")).await;
        cancel.cancel_query(tokio_postgres::NoTls).await
    });
    let err = tokio::time::timeout(TIMEOUT, client.query("SELECT * FROM live", &[]))
        .await
        .expect("cancel must end a live SELECT")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    canceller.await.unwrap().unwrap();
    still_works(&client).await;
}

#[tokio::test]
async fn sources_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = readings_file(dir.path());
    {
        let mut server = TestServer::start_in(data.path(), &[]);
        let client = server.client().await;
        client
            .simple_query(&create_sql("r", &file, ", on_error = 'skip'"))
            .await
            .unwrap();
        server.kill9();
    }
    let server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    assert_eq!(
        column(&client, "SHOW SOURCES").await,
        vec![Some("r".to_string())]
    );
    assert_eq!(
        column(&client, "SELECT count(*) FROM r").await,
        vec![Some("10".to_string())]
    );
    // A source whose input went away is still listed and can be dropped;
    // reading it says why it fails.
    std::fs::remove_file(&file).unwrap();
    assert!(client.query("SELECT * FROM r", &[]).await.is_err());
    client.simple_query("DROP SOURCE r").await.unwrap();
}

/// Polls `sql` (one boolean) until it is true, failing after TIMEOUT: for
/// conditions that depend on another connection's progress or on wall-clock
/// time (an idle timeout), never to wait for results.
async fn eventually(client: &tokio_postgres::Client, sql: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let row = client.query_one(sql, &[]).await.unwrap();
        if row.get::<_, Option<bool>>(0) == Some(true) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not true within {TIMEOUT:?}: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_split_stops_holding_back_the_watermark() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quiet.json"), "").unwrap();
    let busy = readings_file(dir.path());
    assert!(busy.exists());
    let path = dir.path().display();
    // Two files, one empty: each is a split. Without an idle timeout the
    // empty one holds the watermark back; with one, it stops doing so.
    for (name, extra) in [("held", ""), ("idle", ", idle_timeout = '200ms'")] {
        client
            .batch_execute(&format!(
                "CREATE SOURCE {name} (sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
                 WITH (connector = 'file', path = '{path}', follow = 'true'{extra}) FORMAT JSON; \
                 CREATE MATERIALIZED VIEW {name}_rows AS SELECT sensor_id FROM {name}"
            ))
            .await
            .unwrap();
    }
    client.batch_execute("FLUSH").await.unwrap();
    // The busy file's last row is 10:00:09, so the watermark is 10:00:07.
    eventually(
        &client,
        "SELECT watermark = TIMESTAMP '2026-11-21 10:00:07' FROM runnel_catalog.sources WHERE name = 'idle'",
    )
    .await;
    let held = client
        .query_one(
            "SELECT watermark IS NULL FROM runnel_catalog.sources WHERE name = 'held'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        held.get::<_, bool>(0),
        "the quiet file must hold the watermark back"
    );
}
