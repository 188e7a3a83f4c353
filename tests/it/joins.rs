//! Joins in materialized views: a stream with a table (lookup, at the time
//! each row is processed) and two streams on the same window (emitted when
//! the window closes), checked against DataFusion's batch join of the same
//! rows.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{TestServer, column, sqlstate};
use crate::views::{COLUMNS, Readings, T0, append, difference, line, load};

#[tokio::test]
async fn a_stream_joins_the_table_as_it_is_when_each_row_arrives() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE sensors (id INT, room TEXT, active BOOLEAN); \
             INSERT INTO sensors VALUES (1, 'kitchen', true), (2, 'hall', true), (3, 'attic', false); \
             CREATE MATERIALIZED VIEW placed AS SELECT r.sensor_id, s.room, r.temperature \
                 FROM r JOIN sensors s ON r.sensor_id = s.id WHERE s.active; \
             CREATE MATERIALIZED VIEW all_rows AS SELECT r.sensor_id, s.room FROM r \
                 LEFT JOIN sensors s ON r.sensor_id = s.id; \
             CREATE MATERIALIZED VIEW rooms AS SELECT s.room, count(*) AS n, max(r.temperature) AS hottest \
                 FROM r JOIN sensors s ON r.sensor_id = s.id GROUP BY s.room; \
             CREATE MATERIALIZED VIEW per_room AS SELECT window_start, room, count(*) AS n \
                 FROM (SELECT r.ts, s.room FROM sensors s JOIN r ON s.id = r.sensor_id) AS j \
                 GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), room",
            path.display()
        ))
        .await
        .unwrap();
    append(
        &path,
        &[
            line(1, 20.0, T0),
            line(2, 21.0, T0 + 1),
            line(3, 22.0, T0 + 2),
            line(4, 23.0, T0 + 3),
        ],
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(
            &client,
            "SELECT sensor_id || ':' || room FROM placed ORDER BY 1"
        )
        .await,
        vec![Some("1:kitchen".to_string()), Some("2:hall".to_string())]
    );
    assert_eq!(
        column(
            &client,
            "SELECT sensor_id || ':' || coalesce(room, '-') FROM all_rows ORDER BY 1"
        )
        .await,
        vec![
            Some("1:kitchen".to_string()),
            Some("2:hall".to_string()),
            Some("3:attic".to_string()),
            Some("4:-".to_string())
        ]
    );
    // The table changes: later rows see the change, earlier ones keep
    // what they were joined with.
    client
        .batch_execute("INSERT INTO sensors VALUES (4, 'cellar', true)")
        .await
        .unwrap();
    append(
        &path,
        &[line(4, 24.0, T0 + 4), line(1, 25.0, T0 + 30_000_000)],
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(
            &client,
            "SELECT count(*) FROM all_rows WHERE sensor_id = 4 AND room IS NULL"
        )
        .await,
        vec![Some("1".to_string())]
    );
    assert_eq!(
        column(&client, "SELECT room FROM placed WHERE sensor_id = 4").await,
        vec![Some("cellar".to_string())]
    );
    assert_eq!(
        column(
            &client,
            "SELECT room || '=' || n FROM per_room ORDER BY room"
        )
        .await,
        vec![
            Some("attic=1".to_string()),
            Some("cellar=1".to_string()),
            Some("hall=1".to_string()),
            Some("kitchen=1".to_string())
        ]
    );
    // An updating aggregate over the joined stream.
    assert_eq!(
        column(
            &client,
            "SELECT room || '=' || n || '/' || CAST(hottest AS INT) FROM rooms ORDER BY room"
        )
        .await,
        vec![
            Some("attic=1/22".to_string()),
            Some("cellar=1/24".to_string()),
            Some("hall=1/21".to_string()),
            Some("kitchen=2/25".to_string())
        ]
    );
    let plan = column(&client, "EXPLAIN MATERIALIZED VIEW placed").await;
    assert!(
        plan.iter().flatten().any(|l| l.starts_with("LookupJoin")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn two_streams_join_on_the_same_window_like_the_batch_join() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    append(&pa, &[]);
    append(&pb, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE ra {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE SOURCE rb {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE ta (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE TABLE tb (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW pairs AS \
                 SELECT x.window_start, x.sensor_id, x.temperature AS tx, y.temperature AS ty \
                 FROM TUMBLE(ra, ts, INTERVAL '2' SECOND) x \
                 JOIN TUMBLE(rb, ts, INTERVAL '2' SECOND) y \
                 ON x.sensor_id = y.sensor_id AND x.window_end = y.window_end \
                 WHERE x.temperature < y.temperature; \
             CREATE MATERIALIZED VIEW lonely AS SELECT x.window_start, x.sensor_id, y.sensor_id IS NULL AS alone \
                 FROM TUMBLE(ra, ts, INTERVAL '2' SECOND) x \
                 LEFT JOIN TUMBLE(rb, ts, INTERVAL '2' SECOND) y \
                 ON x.sensor_id = y.sensor_id AND x.window_end = y.window_end; \
             CREATE MATERIALIZED VIEW wa AS SELECT window_start, window_end, sensor_id, count(*) AS n \
                 FROM ra GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), sensor_id; \
             CREATE MATERIALIZED VIEW wb AS SELECT window_start, window_end, sensor_id, max(temperature) AS hi \
                 FROM rb GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), sensor_id; \
             CREATE MATERIALIZED VIEW both_windows AS SELECT wa.window_start, wa.sensor_id, wa.n, wb.hi \
                 FROM wa JOIN wb ON wa.sensor_id = wb.sensor_id AND wa.window_end = wb.window_end",
            pa.display(),
            pb.display()
        ))
        .await
        .unwrap();
    let mut stream_a = Readings::new(5, 6, 40_000, 1_500_000);
    let mut stream_b = Readings::new(6, 6, 40_000, 1_500_000);
    for _ in 0..4 {
        let a = stream_a.chunk(30..120);
        let b = stream_b.chunk(30..120);
        append(&pa, &a);
        append(&pb, &b);
        load(&client, "ta", &a).await;
        load(&client, "tb", &b).await;
        client.batch_execute("FLUSH").await.unwrap();
    }
    let end = stream_a.newest.max(stream_b.newest) + 60_000_000;
    append(&pa, &[line(99, 0.0, end)]);
    append(&pb, &[line(98, 0.0, end)]);
    client.batch_execute("FLUSH").await.unwrap();
    let w = "date_bin(INTERVAL '2' SECOND, ts)";
    let same_window = "x.sensor_id = y.sensor_id \
        AND date_bin(INTERVAL '2' SECOND, x.ts) = date_bin(INTERVAL '2' SECOND, y.ts)";
    let checks = [
        (
            "SELECT * FROM pairs",
            format!(
                "SELECT date_bin(INTERVAL '2' SECOND, x.ts) AS ws, x.sensor_id AS s, \
                 x.temperature AS tx, y.temperature AS ty FROM ta x JOIN tb y ON {same_window} \
                 WHERE x.temperature < y.temperature"
            ),
        ),
        (
            "SELECT * FROM lonely WHERE sensor_id <> 99",
            format!(
                "SELECT date_bin(INTERVAL '2' SECOND, x.ts) AS ws, x.sensor_id AS s, \
                 y.sensor_id IS NULL AS alone FROM ta x LEFT JOIN tb y ON {same_window}"
            ),
        ),
        (
            "SELECT * FROM both_windows",
            format!(
                "SELECT a.ws, a.sensor_id, a.n, b.hi FROM \
                 (SELECT {w} AS ws, sensor_id, count(*) AS n FROM ta GROUP BY 1, 2) a JOIN \
                 (SELECT {w} AS ws, sensor_id, max(temperature) AS hi FROM tb GROUP BY 1, 2) b \
                 ON a.ws = b.ws AND a.sensor_id = b.sensor_id"
            ),
        ),
    ];
    for (view, batch) in checks {
        assert_eq!(
            difference(&client, view, &batch).await,
            Vec::<String>::new(),
            "{view}"
        );
    }
    assert!(
        !column(&client, "SELECT count(*) FROM pairs")
            .await
            .is_empty()
    );
    let state = column(
        &client,
        "SELECT state_rows FROM runnel_catalog.materialized_views WHERE name = 'pairs'",
    )
    .await;
    assert_eq!(
        state,
        vec![Some("2".to_string())],
        "only the open last window's rows remain"
    );
}

#[tokio::test]
async fn joins_that_cannot_run_incrementally_are_refused() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE sensors (id INT, room TEXT)",
            path.display()
        ))
        .await
        .unwrap();
    for (sql, message) in [
        (
            "CREATE MATERIALIZED VIEW x AS SELECT * FROM r a JOIN r b ON a.sensor_id = b.sensor_id",
            "same window",
        ),
        (
            "CREATE MATERIALIZED VIEW x AS SELECT * FROM r FULL JOIN sensors s ON r.sensor_id = s.id",
            "join of a stream with a table",
        ),
        (
            "CREATE MATERIALIZED VIEW x AS SELECT * FROM sensors s LEFT JOIN r ON r.sensor_id = s.id",
            "join of a stream with a table",
        ),
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "{sql}: {err:?}");
        let text = err.as_db_error().unwrap().message().to_string();
        assert!(text.contains(message), "{sql}: {text}");
    }
}

#[tokio::test]
async fn two_streams_join_within_a_time_bound_like_the_batch_join() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    append(&pa, &[]);
    append(&pb, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE ra {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE SOURCE rb {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE ta (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE TABLE tb (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW near AS SELECT x.sensor_id, x.ts AS tx, y.ts AS ty, y.temperature \
                 FROM ra x JOIN rb y ON x.sensor_id = y.sensor_id \
                 AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '500' MILLISECOND \
                 WHERE y.temperature > 10",
            pa.display(),
            pb.display()
        ))
        .await
        .unwrap();
    let mut stream_a = Readings::new(8, 5, 60_000, 1_500_000);
    let mut stream_b = Readings::new(9, 5, 60_000, 1_500_000);
    for _ in 0..5 {
        let a = stream_a.chunk(30..150);
        let b = stream_b.chunk(30..150);
        append(&pa, &a);
        append(&pb, &b);
        load(&client, "ta", &a).await;
        load(&client, "tb", &b).await;
        client.batch_execute("FLUSH").await.unwrap();
        // Matches appear as soon as both rows are there: no window to close.
        assert_eq!(
            difference(
                &client,
                "SELECT * FROM near",
                "SELECT x.sensor_id AS s, x.ts AS tx, y.ts AS ty, y.temperature AS t FROM ta x JOIN tb y \
                 ON x.sensor_id = y.sensor_id \
                 AND y.ts BETWEEN x.ts - INTERVAL '1' SECOND AND x.ts + INTERVAL '500' MILLISECOND \
                 WHERE y.temperature > 10"
            )
            .await,
            Vec::<String>::new()
        );
    }
    // Old rows leave the state as the watermark moves on.
    append(&pa, &[line(1, 0.0, stream_a.newest + 60_000_000)]);
    append(&pb, &[line(1, 0.0, stream_b.newest + 60_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    let state: i64 = column(
        &client,
        "SELECT state_rows FROM runnel_catalog.materialized_views WHERE name = 'near'",
    )
    .await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(state < 10, "expired rows are freed: {state}");
    let plan = column(&client, "EXPLAIN MATERIALIZED VIEW near").await;
    assert!(
        plan.iter().flatten().any(|l| l.starts_with("IntervalJoin")),
        "{plan:?}"
    );
    // A bound on a column that is not the event time is refused.
    let err = client
        .batch_execute(
            "CREATE MATERIALIZED VIEW bad AS SELECT * FROM ra x JOIN rb y ON x.sensor_id = y.sensor_id \
             AND y.temperature BETWEEN x.temperature - 1 AND x.temperature + 1",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
}

#[tokio::test]
async fn random_streams_joined_with_a_table_equal_the_batch_join() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[]);
    let mut rng = StdRng::seed_from_u64(31);
    let rooms: Vec<String> = (0..8)
        .filter(|_| rng.random_bool(0.7))
        .map(|i| format!("({i}, 'room{}')", i % 3))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE ta (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE TABLE sensors (id INT, room TEXT); \
             INSERT INTO sensors VALUES {}; \
             CREATE MATERIALIZED VIEW enriched AS SELECT r.sensor_id, s.room, r.temperature, r.ts \
                 FROM r LEFT JOIN sensors s ON r.sensor_id = s.id WHERE r.temperature > 5; \
             CREATE MATERIALIZED VIEW per_room AS SELECT window_start, room, count(*) AS n, \
                 max(temperature) AS hi FROM (SELECT r.ts, r.temperature, s.room FROM r \
                 JOIN sensors s ON r.sensor_id = s.id) AS j \
                 GROUP BY TUMBLE(ts, INTERVAL '2' SECOND), room",
            path.display(),
            rooms.join(", ")
        ))
        .await
        .unwrap();
    let mut readings = Readings::new(32, 10, 40_000, 1_500_000);
    for _ in 0..5 {
        let chunk = readings.chunk(50..200);
        append(&path, &chunk);
        load(&client, "ta", &chunk).await;
        client.batch_execute("FLUSH").await.unwrap();
        assert_eq!(
            difference(
                &client,
                "SELECT * FROM enriched",
                "SELECT r.sensor_id AS s, s.room AS room, r.temperature AS t, r.ts AS ts \
                 FROM ta r LEFT JOIN sensors s ON r.sensor_id = s.id WHERE r.temperature > 5"
            )
            .await,
            Vec::<String>::new()
        );
    }
    append(&path, &[line(1, 0.0, readings.newest + 60_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        difference(
            &client,
            "SELECT * FROM per_room",
            "SELECT date_bin(INTERVAL '2' SECOND, r.ts) AS ws, s.room AS room, count(*) AS n, \
             max(r.temperature) AS hi FROM ta r JOIN sensors s ON r.sensor_id = s.id GROUP BY 1, 2"
        )
        .await,
        Vec::<String>::new()
    );
}
