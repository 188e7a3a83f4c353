//! Updating views (docs/design/0005): aggregates without a window,
//! `emit = 'on_update'`, allowed lateness, views on views and UNION ALL.
//! After every FLUSH an updating view must equal DataFusion's batch answer
//! over the rows written so far; nothing sleeps.

use std::path::Path;

use tokio_postgres::Client;

use crate::harness::{TestServer, column, sqlstate};
use crate::views::{COLUMNS, Readings, T0, append, difference, line, load};

async fn source(client: &Client, name: &str, path: &Path) {
    append(path, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE {name} {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON",
            path.display()
        ))
        .await
        .unwrap();
}

async fn figures(client: &Client, view: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT state_rows, late_rows, rows_deleted FROM runnel_catalog.materialized_views WHERE name = $1",
            &[&view],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn aggregates_without_a_window_update_and_equal_the_batch_answer_after_every_flush() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    source(&client, "r", &path).await;
    client
        .batch_execute(
            "CREATE TABLE r_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW per_sensor AS SELECT sensor_id, count(*) AS n, \
                 round(avg(temperature), 6) AS a, min(temperature) AS lo, max(temperature) AS hi, \
                 count(DISTINCT temperature) AS d \
             FROM r GROUP BY sensor_id; \
             CREATE MATERIALIZED VIEW busy AS SELECT sensor_id, count(*) AS n FROM r \
                 WHERE temperature > 10 GROUP BY sensor_id HAVING count(*) > 20; \
             CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(temperature) IS NULL AS empty FROM r",
        )
        .await
        .unwrap();
    // Before any row, a global aggregate already has its one row.
    client.batch_execute("FLUSH").await.unwrap();
    let mut readings = Readings::new(7, 12, 20_000, 0);
    for _ in 0..6 {
        let chunk = readings.chunk(50..400);
        append(&path, &chunk);
        load(&client, "r_table", &chunk).await;
        client.batch_execute("FLUSH").await.unwrap();
        for (view, batch) in [
            (
                "per_sensor",
                "SELECT sensor_id, count(*), round(avg(temperature), 6), min(temperature), \
                 max(temperature), count(DISTINCT temperature) FROM r_table GROUP BY sensor_id",
            ),
            (
                "busy",
                "SELECT sensor_id, count(*) FROM r_table WHERE temperature > 10 \
                 GROUP BY sensor_id HAVING count(*) > 20",
            ),
            (
                "total",
                "SELECT count(*), sum(temperature) IS NULL FROM r_table",
            ),
        ] {
            assert_eq!(
                difference(&client, &format!("SELECT * FROM {view}"), batch).await,
                Vec::<String>::new(),
                "{view}"
            );
        }
    }
    // Updates replace rows: the view holds one row per key, and the deleted
    // versions are counted.
    let (groups, _, deleted) = figures(&client, "per_sensor").await;
    assert_eq!(groups, 12);
    assert!(deleted > 0);
    let plan = column(&client, "EXPLAIN MATERIALIZED VIEW per_sensor").await;
    assert!(
        plan.iter()
            .flatten()
            .any(|l| l.starts_with("UpdatingAggregate")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn on_update_windows_show_partial_rows_and_allowed_lateness_corrects_emitted_ones() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    source(&client, "r", &path).await;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW live WITH (emit = 'on_update') AS \
                 SELECT window_start, sensor_id, count(*) AS n, max(temperature) AS hi \
                 FROM r GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id; \
             CREATE MATERIALIZED VIEW final WITH (allowed_lateness = '10 seconds') AS \
                 SELECT window_start, sensor_id, count(*) AS n \
                 FROM r GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id",
        )
        .await
        .unwrap();
    append(&path, &[line(1, 20.0, T0), line(1, 25.0, T0 + 1_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    // The window is open: `live` shows it, `final` does not yet.
    assert_eq!(
        column(&client, "SELECT n || '/' || CAST(hi AS BIGINT) FROM live").await,
        vec![Some("2/25".to_string())]
    );
    assert!(column(&client, "SELECT n FROM final").await.is_empty());
    append(&path, &[line(1, 30.0, T0 + 2_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT n || '/' || CAST(hi AS BIGINT) FROM live").await,
        vec![Some("3/30".to_string())],
        "the partial row is replaced, not added"
    );
    // The watermark (ts - 2 s) passes the window's end: `final` emits it,
    // `live` frees its state.
    append(&path, &[line(2, 20.0, T0 + 8_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT n FROM final WHERE sensor_id = 1").await,
        vec![Some("3".to_string())]
    );
    // A late row inside the allowed lateness corrects `final`; `live` has
    // closed the window and drops it.
    append(&path, &[line(1, 21.0, T0 + 3_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT n FROM final WHERE sensor_id = 1").await,
        vec![Some("4".to_string())]
    );
    assert_eq!(
        column(&client, "SELECT n FROM live WHERE sensor_id = 1").await,
        vec![Some("3".to_string())]
    );
    assert_eq!(figures(&client, "live").await.1, 1, "one late row in live");
    // Past end + lateness, the window's state is gone and rows are late.
    append(&path, &[line(3, 20.0, T0 + 30_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    append(&path, &[line(1, 21.0, T0 + 4_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT n FROM final WHERE sensor_id = 1").await,
        vec![Some("4".to_string())]
    );
    let (state_rows, late, _) = figures(&client, "final").await;
    assert_eq!(late, 1);
    assert!(state_rows <= 2, "closed windows are freed: {state_rows}");
}

#[tokio::test]
async fn views_on_views_and_union_all_equal_the_batch_answer() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    source(&client, "ra", &pa).await;
    source(&client, "rb", &pb).await;
    client
        .batch_execute(
            "CREATE TABLE r_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE TABLE a_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW both_w AS SELECT window_start, sensor_id, count(*) AS n \
                 FROM (SELECT * FROM ra UNION ALL SELECT * FROM rb) AS u \
                 GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), sensor_id; \
             CREATE MATERIALIZED VIEW per_sensor AS SELECT sensor_id, sum(n) AS n, count(*) AS windows \
                 FROM both_w GROUP BY sensor_id; \
             CREATE MATERIALIZED VIEW counts AS SELECT sensor_id % 3 AS bucket, count(*) AS n \
                 FROM ra GROUP BY sensor_id % 3; \
             CREATE MATERIALIZED VIEW big_buckets AS SELECT count(*) AS buckets, sum(n) AS rows \
                 FROM counts WHERE n > 5; \
             CREATE MATERIALIZED VIEW hot AS SELECT sensor_id, ts FROM ra WHERE temperature > 25 \
                 UNION ALL SELECT sensor_id, ts FROM rb WHERE temperature < 5",
        )
        .await
        .unwrap();
    let mut stream_a = Readings::new(11, 8, 30_000, 1_500_000);
    let mut stream_b = Readings::new(12, 8, 30_000, 1_500_000);
    for _ in 0..5 {
        let chunk_a = stream_a.chunk(40..200);
        let chunk_b = stream_b.chunk(40..200);
        append(&pa, &chunk_a);
        append(&pb, &chunk_b);
        load(&client, "r_table", &chunk_a).await;
        load(&client, "r_table", &chunk_b).await;
        load(&client, "a_table", &chunk_a).await;
        client.batch_execute("FLUSH").await.unwrap();
        // The updating chain (counts -> big_buckets) reads ra alone.
        assert_eq!(
            difference(
                &client,
                "SELECT * FROM big_buckets",
                "SELECT count(*), sum(n) FROM (SELECT sensor_id % 3 AS b, count(*) AS n \
                 FROM a_table GROUP BY 1) WHERE n > 5",
            )
            .await,
            Vec::<String>::new()
        );
    }
    // Close every window on both inputs: the union's watermark is the
    // minimum, so both must move.
    let end = stream_a.newest.max(stream_b.newest) + 60_000_000;
    append(&pa, &[line(99, 0.0, end)]);
    append(&pb, &[line(99, 0.0, end)]);
    client.batch_execute("FLUSH").await.unwrap();
    let cutoff = format!(
        "TIMESTAMP '{}'",
        chrono::DateTime::from_timestamp_micros(stream_a.newest.max(stream_b.newest) + 10_000_000)
            .unwrap()
            .naive_utc()
    );
    let windows = format!(
        "SELECT date_bin(INTERVAL '2' SECOND, ts) AS window_start, sensor_id, count(*) AS n \
         FROM r_table WHERE ts < {cutoff} GROUP BY 1, 2"
    );
    assert_eq!(
        difference(
            &client,
            &format!("SELECT * FROM both_w WHERE window_start < {cutoff}"),
            &windows
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        difference(
            &client,
            "SELECT * FROM per_sensor WHERE sensor_id <> 99",
            &format!("SELECT sensor_id, sum(n), count(*) FROM ({windows}) GROUP BY sensor_id")
        )
        .await,
        Vec::<String>::new()
    );
    // ra's rows above 25, rb's below 5, and rb's closing row (0 degrees).
    assert_eq!(
        column(&client, "SELECT count(*) FROM hot").await,
        column(
            &client,
            "SELECT (SELECT count(*) FROM a_table WHERE temperature > 25) \
                  + (SELECT count(*) FROM r_table WHERE temperature < 5) \
                  - (SELECT count(*) FROM a_table WHERE temperature < 5) + 1"
        )
        .await
    );
    // A view others read cannot be dropped alone.
    let err = client
        .batch_execute("DROP MATERIALIZED VIEW both_w")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "2BP01");
    let plan = column(&client, "EXPLAIN MATERIALIZED VIEW per_sensor").await;
    assert!(
        plan.iter().flatten().any(|l| l.starts_with("View: both_w")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn updating_plans_that_cannot_be_kept_correct_are_refused() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    source(&client, "r", &path).await;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW counts AS SELECT sensor_id, count(*) AS n FROM r GROUP BY sensor_id",
        )
        .await
        .unwrap();
    for (sql, state, message) in [
        (
            "CREATE MATERIALIZED VIEW x AS SELECT max(n) FROM counts",
            "0A000",
            "retract",
        ),
        (
            "CREATE MATERIALIZED VIEW x WITH (emit = 'on_update') AS SELECT * FROM r",
            "22023",
            "window",
        ),
        (
            "CREATE MATERIALIZED VIEW x WITH (emit = 'sometimes') AS SELECT window_start, count(*) \
             FROM r GROUP BY TUMBLE(ts, '5s')",
            "22023",
            "on_update",
        ),
        (
            "CREATE MATERIALIZED VIEW x WITH (allowed_lateness = 'soon') AS SELECT window_start, count(*) \
             FROM r GROUP BY TUMBLE(ts, '5s')",
            "22023",
            "interval",
        ),
        (
            "CREATE MATERIALIZED VIEW x WITH (colour = 'red') AS SELECT * FROM r",
            "22023",
            "emit, allowed_lateness",
        ),
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), state, "{sql}: {err:?}");
        let text = err.as_db_error().unwrap().message().to_string();
        assert!(text.contains(message), "{sql}: {text}");
    }
    assert_eq!(column(&client, "SHOW MATERIALIZED VIEWS").await.len(), 1);
}

#[tokio::test]
async fn random_streams_through_emission_options_end_equal_to_the_batch_answer() {
    for seed in [21u64, 22] {
        let server = TestServer::start();
        let client = server.client().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        source(&client, "r", &path).await;
        client
            .batch_execute(
                "CREATE TABLE r_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
                 CREATE MATERIALIZED VIEW live WITH (emit = 'on_update') AS \
                     SELECT window_start, sensor_id, count(*) AS n, max(temperature) AS hi \
                     FROM r GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), sensor_id; \
                 CREATE MATERIALIZED VIEW late_ok WITH (allowed_lateness = '5 seconds') AS \
                     SELECT window_start, sensor_id, count(*) AS n, round(avg(temperature), 6) AS a \
                     FROM r GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), sensor_id",
            )
            .await
            .unwrap();
        let mut readings = Readings::new(seed, 6, 40_000, 1_900_000);
        for _ in 0..6 {
            let chunk = readings.chunk(50..250);
            append(&path, &chunk);
            load(&client, "r_table", &chunk).await;
            client.batch_execute("FLUSH").await.unwrap();
            // While windows are open, `live` already equals the batch answer
            // over every row so far, open windows included.
            assert_eq!(
                difference(
                    &client,
                    "SELECT * FROM live",
                    "SELECT date_bin(INTERVAL '2' SECOND, ts) AS ws, sensor_id, count(*) AS n, \
                     max(temperature) AS hi FROM r_table GROUP BY 1, 2"
                )
                .await,
                Vec::<String>::new(),
                "seed {seed}: live"
            );
        }
        append(&path, &[line(99, 0.0, readings.newest + 60_000_000)]);
        client.batch_execute("FLUSH").await.unwrap();
        assert_eq!(
            difference(
                &client,
                "SELECT * FROM late_ok WHERE sensor_id <> 99",
                "SELECT date_bin(INTERVAL '2' SECOND, ts) AS ws, sensor_id, count(*) AS n, \
                 round(avg(temperature), 6) AS a FROM r_table GROUP BY 1, 2"
            )
            .await,
            Vec::<String>::new(),
            "seed {seed}: late_ok"
        );
    }
}
