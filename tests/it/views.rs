//! Materialized views over sources: windowed aggregates and append-only
//! views, checked against DataFusion's batch answer over the same rows
//! (windows as `date_bin`). Time is driven by the data and FLUSH; nothing
//! sleeps to wait for results.

use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::harness::{TestServer, column, sqlstate};

pub const COLUMNS: &str = "(sensor_id INT, temperature DOUBLE, ts TIMESTAMP, \
                       WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)";

pub fn line(sensor: u32, temperature: f64, micros: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.6f");
    format!(r#"{{"sensor_id": {sensor}, "temperature": {temperature}, "ts": "{ts}"}}"#)
}

pub fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_all().unwrap();
}

/// Rows of `a` not in `b` and of `b` not in `a`, as text.
pub async fn difference(client: &Client, a: &str, b: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (x, y) in [(a, b), (b, a)] {
        let rows = client
            .simple_query(&format!("({x}) EXCEPT ALL ({y})"))
            .await
            .unwrap_or_else(|e| panic!("({x}) EXCEPT ALL ({y}): {e:?}"));
        for m in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                out.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
    }
    out
}

/// Copies `lines` (JSON readings) into `table`, for batch answers over
/// exactly the rows a source was given.
pub async fn load(client: &Client, table: &str, lines: &[String]) {
    let copy = client
        .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await
        .unwrap();
    let mut csv = String::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        csv.push_str(&format!(
            "{},{},{}\n",
            v["sensor_id"],
            v["temperature"],
            v["ts"].as_str().unwrap()
        ));
    }
    futures::pin_mut!(copy);
    futures::SinkExt::send(&mut copy, bytes::Bytes::from(csv))
        .await
        .unwrap();
    copy.finish().await.unwrap();
}

/// Random readings (temperatures 0.0 to 29.9) whose event time moves on by
/// up to `step` µs a row and lags the newest by less than `disorder` µs:
/// under the sources' 2 s watermark bound no row is late.
pub struct Readings {
    rng: StdRng,
    /// The newest event time so far (µs).
    pub newest: i64,
    sensors: u32,
    step: i64,
    disorder: i64,
}

impl Readings {
    pub fn new(seed: u64, sensors: u32, step: i64, disorder: i64) -> Self {
        Readings {
            rng: StdRng::seed_from_u64(seed),
            newest: T0,
            sensors,
            step,
            disorder,
        }
    }

    /// A chunk of `rows.start` to `rows.end` readings.
    pub fn chunk(&mut self, rows: std::ops::Range<usize>) -> Vec<String> {
        let n = self.rng.random_range(rows);
        (0..n)
            .map(|_| {
                self.newest += self.rng.random_range(0..self.step);
                let lag = if self.disorder > 0 {
                    self.rng.random_range(0..self.disorder)
                } else {
                    0
                };
                line(
                    self.rng.random_range(0..self.sensors),
                    (self.rng.random_range(0..300) as f64) / 10.0,
                    self.newest - lag,
                )
            })
            .collect()
    }
}

pub const T0: i64 = 1_795_255_200_000_000; // 2026-11-21 10:00:00 UTC

#[tokio::test]
async fn a_tumbling_window_view_equals_the_batch_answer_with_every_aggregate() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut rng = StdRng::seed_from_u64(42);
    let lines: Vec<String> = (0..5000)
        .map(|i| {
            line(
                rng.random_range(0..20),
                (rng.random_range(0..400) as f64) / 10.0,
                T0 + i * 3_000,
            )
        })
        .collect();
    append(&path, &lines);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON",
            path.display()
        ))
        .await
        .unwrap();
    let aggregates = "count(*) AS n, round(sum(temperature), 6) AS s, min(temperature) AS lo, \
                      max(temperature) AS hi, count(DISTINCT temperature) AS d, \
                      bool_and(temperature > 1) AS all_warm, \
                      round(stddev(temperature), 6) AS sd, round(avg(temperature), 6) AS a, \
                      approx_distinct(CAST(temperature * 10 AS BIGINT)) AS ad";
    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW w AS SELECT window_start, window_end, sensor_id, {aggregates} \
             FROM r GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id; FLUSH"
        ))
        .await
        .unwrap();
    let batch = format!(
        "SELECT date_bin(INTERVAL '5' SECOND, ts) AS window_start, \
         date_bin(INTERVAL '5' SECOND, ts) + INTERVAL '5' SECOND AS window_end, sensor_id, {aggregates} \
         FROM r GROUP BY 1, 2, 3"
    );
    let view = "SELECT * FROM w";
    assert_eq!(
        column(&client, "SELECT count(*) FROM w").await,
        column(&client, &format!("SELECT count(*) FROM ({batch})")).await
    );
    assert_eq!(
        difference(&client, view, &batch).await,
        Vec::<String>::new()
    );
    // The view is a table to any SQL: joins, filters, ORDER BY, LIMIT.
    let top = column(
        &client,
        "SELECT w.sensor_id FROM w JOIN (SELECT max(n) AS m FROM w) x ON w.n = x.m \
         ORDER BY w.window_start DESC, w.sensor_id LIMIT 1",
    )
    .await;
    assert_eq!(top.len(), 1);
}

#[tokio::test]
async fn random_disordered_streams_end_equal_to_the_batch_answer() {
    for seed in [1u64, 2, 3] {
        let server = TestServer::start();
        let client = server.client().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        append(&path, &[]);
        client
            .batch_execute(&format!(
                "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
                 CREATE MATERIALIZED VIEW w AS SELECT window_start, sensor_id, count(*) AS n, \
                     max(temperature) AS hi, round(sum(temperature), 6) AS s \
                 FROM r GROUP BY TUMBLE(ts, '2s'), sensor_id HAVING count(*) > 1; \
                 CREATE MATERIALIZED VIEW hot AS SELECT sensor_id, temperature * 2 AS t2, ts \
                 FROM r WHERE temperature > 30",
                path.display()
            ))
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut max_ts = T0;
        let mut all = Vec::new();
        for _ in 0..8 {
            let mut chunk = Vec::new();
            for _ in 0..rng.random_range(50..300) {
                max_ts += rng.random_range(0..40_000);
                // Disorder inside the watermark bound (2 s): never late.
                let ts = max_ts - rng.random_range(0..1_900_000);
                chunk.push(line(
                    rng.random_range(0..5),
                    (rng.random_range(0..400) as f64) / 10.0,
                    ts,
                ));
            }
            append(&path, &chunk);
            all.extend(chunk);
            client.batch_execute("FLUSH").await.unwrap();
        }
        // A row far ahead closes every earlier window.
        let end = max_ts + 60_000_000;
        append(&path, &[line(99, 0.0, end)]);
        client.batch_execute("FLUSH").await.unwrap();
        let cutoff = format!(
            "TIMESTAMP '{}'",
            chrono::DateTime::from_timestamp_micros(max_ts + 10_000_000)
                .unwrap()
                .naive_utc()
        );
        let batch = format!(
            "SELECT date_bin(INTERVAL '2' SECOND, ts) AS window_start, sensor_id, count(*) AS n, \
             max(temperature) AS hi, round(sum(temperature), 6) AS s FROM r_table \
             WHERE ts < {cutoff} GROUP BY 1, 2 HAVING count(*) > 1"
        );
        // The batch answer over exactly the rows written, from a table.
        client
            .batch_execute("CREATE TABLE r_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP)")
            .await
            .unwrap();
        load(&client, "r_table", &all).await;
        let view = format!("SELECT * FROM w WHERE window_start < {cutoff}");
        assert_eq!(
            difference(&client, &view, &batch).await,
            Vec::<String>::new(),
            "seed {seed}"
        );
        // The append-only view has every qualifying row, once.
        let hot = difference(
            &client,
            "SELECT * FROM hot",
            "SELECT sensor_id, temperature * 2, ts FROM r_table WHERE temperature > 30",
        )
        .await;
        assert_eq!(hot, Vec::<String>::new(), "seed {seed}");
    }
}

#[tokio::test]
async fn late_rows_are_dropped_and_window_syntaxes_agree() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0), line(1, 21.0, T0 + 1_000_000)]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE MATERIALIZED VIEW a AS SELECT window_start, count(*) AS n FROM r \
                 GROUP BY TUMBLE(ts, INTERVAL '5' SECOND); \
             CREATE MATERIALIZED VIEW b AS SELECT window_start, count(*) AS n \
                 FROM TUMBLE(r, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end; \
             CREATE MATERIALIZED VIEW c AS SELECT window_start, window_end - window_start AS size, count(*) AS n \
                 FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '5' SECOND)) GROUP BY window_start, window_end",
            path.display()
        ))
        .await
        .unwrap();
    // Past the end of the first window plus the 2 s bound: it closes.
    append(&path, &[line(2, 22.0, T0 + 8_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    for v in ["a", "b", "c"] {
        assert_eq!(
            column(&client, &format!("SELECT n FROM {v}")).await,
            vec![Some("2".to_string())],
            "{v}"
        );
    }
    assert_eq!(
        column(&client, "SELECT size FROM c").await,
        vec![Some("00:00:05".to_string())]
    );
    // A row for the closed window is late: dropped, the result stays final.
    append(
        &path,
        &[
            line(3, 23.0, T0 + 2_000_000),
            line(3, 23.0, T0 + 20_000_000),
        ],
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT n FROM a ORDER BY window_start").await,
        vec![Some("2".to_string()), Some("1".to_string())]
    );
    // The views table counts the late row and shows the one open window.
    let figures = client
        .query_one(
            "SELECT late_rows, state_rows, rows_in, rows_out, state, watermark = TIMESTAMP '2026-11-21 10:00:18', plan \
             FROM runnel_catalog.materialized_views WHERE name = 'a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(figures.get::<_, i64>(0), 1);
    assert_eq!(figures.get::<_, i64>(1), 1);
    assert_eq!(figures.get::<_, i64>(2), 5);
    assert_eq!(figures.get::<_, i64>(3), 2);
    assert_eq!(figures.get::<_, &str>(4), "running");
    assert!(
        figures.get::<_, bool>(5),
        "watermark = the last row's time - 2 s"
    );
    let plan: &str = figures.get(6);
    assert!(
        plan.contains("WindowAggregate") && plan.contains("Source: r"),
        "{plan}"
    );
    // EXPLAIN shows the same graph, for a running view and for a statement.
    let explained: Vec<String> = column(&client, "EXPLAIN MATERIALIZED VIEW a")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(explained.join("\n"), plan);
    let planned = client
        .query(
            "EXPLAIN CREATE MATERIALIZED VIEW z AS SELECT window_start, count(*) FROM r \
             GROUP BY TUMBLE(ts, INTERVAL '5' SECOND)",
            &[],
        )
        .await
        .unwrap();
    let lines: Vec<String> = planned.iter().map(|r| r.get(0)).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("WindowAggregate")),
        "{lines:?}"
    );
    assert_eq!(
        column(&client, "SHOW MATERIALIZED VIEWS").await.len(),
        3,
        "EXPLAIN creates nothing"
    );
}

#[tokio::test]
async fn what_cannot_run_incrementally_is_refused_and_dependencies_hold() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[line(1, 20.0, T0)]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE TABLE t (a INT)",
            path.display()
        ))
        .await
        .unwrap();
    for (sql, message) in [
        (
            "CREATE MATERIALIZED VIEW x AS SELECT r.sensor_id FROM r JOIN r AS q ON r.ts = q.ts",
            "join",
        ),
        (
            "CREATE MATERIALIZED VIEW x AS SELECT * FROM r ORDER BY ts",
            "ORDER BY",
        ),
        (
            "CREATE MATERIALIZED VIEW x WITH (emit = 'on_update') AS SELECT count(*) FROM r \
             GROUP BY SESSION(ts, INTERVAL '1' MINUTE)",
            "SESSION",
        ),
        ("CREATE MATERIALIZED VIEW x AS SELECT a FROM t", "source"),
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err), "0A000", "{sql}: {err:?}");
        let text = err.as_db_error().unwrap().message().to_string();
        assert!(text.contains(message), "{sql}: {text}");
    }
    assert!(column(&client, "SHOW MATERIALIZED VIEWS").await.is_empty());
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW w AS SELECT window_start, count(*) AS n FROM r \
             GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE); FLUSH",
        )
        .await
        .unwrap();
    assert_eq!(
        column(&client, "SELECT n FROM w").await,
        vec![Some("1".to_string())]
    );
    let err = client.batch_execute("DROP SOURCE r").await.unwrap_err();
    assert_eq!(sqlstate(&err), "2BP01");
    client.batch_execute("DROP SOURCE r CASCADE").await.unwrap();
    assert!(column(&client, "SHOW MATERIALIZED VIEWS").await.is_empty());
}

#[tokio::test]
async fn views_come_back_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(
        &path,
        &(0..100)
            .map(|i| line(i % 4, 20.0, T0 + i as i64 * 100_000))
            .collect::<Vec<_>>(),
    );
    let create = format!(
        "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
         CREATE MATERIALIZED VIEW w AS SELECT window_start, sensor_id, count(*) AS n FROM r \
         GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id",
        path.display()
    );
    let before = {
        let mut server = TestServer::start_in(data.path(), &[]);
        let client = server.client().await;
        client.batch_execute(&create).await.unwrap();
        client.batch_execute("FLUSH").await.unwrap();
        let rows = column(&client, "SELECT sum(n) FROM w").await;
        server.kill9();
        rows
    };
    assert_eq!(before, vec![Some("100".to_string())]);
    let server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(column(&client, "SELECT sum(n) FROM w").await, before);
}

#[tokio::test]
async fn hopping_windows_put_each_row_in_every_window_that_contains_it() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let mut rng = StdRng::seed_from_u64(7);
    let lines: Vec<String> = (0..2000)
        .map(|i| line(rng.random_range(0..5), 20.0, T0 + i * 7_000))
        .collect();
    append(&path, &lines);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE MATERIALIZED VIEW h AS SELECT window_start, window_end, sensor_id, count(*) AS n \
             FROM r GROUP BY HOP(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND), sensor_id; FLUSH",
            path.display()
        ))
        .await
        .unwrap();
    // Every row is in size / slide = 3 windows.
    assert_eq!(
        column(&client, "SELECT sum(n) FROM h").await,
        vec![Some("6000".to_string())]
    );
    // Each window is 3 s long, starts on a whole second, and counts the
    // rows whose time falls inside it.
    let batch = "SELECT w.s AS window_start, w.s + INTERVAL '3' SECOND AS window_end, r.sensor_id, count(*) AS n \
                 FROM r JOIN (SELECT DISTINCT window_start AS s FROM h) w \
                 ON r.ts >= w.s AND r.ts < w.s + INTERVAL '3' SECOND GROUP BY 1, 2, 3";
    assert_eq!(
        difference(&client, "SELECT * FROM h", batch).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn session_windows_merge_rows_less_than_a_gap_apart_like_batch_sessionization() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    append(&path, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE TABLE r_table (sensor_id INT, temperature DOUBLE, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW s AS SELECT window_start, window_end, sensor_id, count(*) AS n, \
                 max(temperature) AS hi FROM r GROUP BY SESSION(ts, INTERVAL '3' SECOND), sensor_id; \
             CREATE MATERIALIZED VIEW s2 AS SELECT window_start, window_end, sensor_id, count(*) AS n, \
                 max(temperature) AS hi FROM SESSION(r, ts, INTERVAL '3' SECOND) \
                 GROUP BY window_start, window_end, sensor_id; \
             CREATE MATERIALIZED VIEW s3 AS SELECT window_start, window_end, sensor_id, count(*) AS n, \
                 max(temperature) AS hi \
                 FROM TABLE(SESSION(TABLE r PARTITION BY sensor_id, DESCRIPTOR(ts), INTERVAL '3' SECOND)) \
                 GROUP BY window_start, window_end, sensor_id",
            path.display()
        ))
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut max_ts = T0;
    for _ in 0..6 {
        let mut chunk = Vec::new();
        for _ in 0..rng.random_range(20..120) {
            // Bursts and pauses, so sessions start, grow and merge.
            max_ts += if rng.random_bool(0.1) {
                rng.random_range(2_000_000..6_000_000)
            } else {
                rng.random_range(0..300_000)
            };
            chunk.push(line(
                rng.random_range(0..4),
                rng.random_range(0..100) as f64,
                max_ts - rng.random_range(0..1_900_000),
            ));
        }
        append(&path, &chunk);
        load(&client, "r_table", &chunk).await;
        client.batch_execute("FLUSH").await.unwrap();
    }
    append(&path, &[line(99, 0.0, max_ts + 60_000_000)]);
    client.batch_execute("FLUSH").await.unwrap();
    let batch = "SELECT min(ts) AS ws, max(ts) + INTERVAL '3' SECOND AS we, sensor_id, count(*) AS n, \
                 max(temperature) AS hi FROM \
                 (SELECT *, sum(CASE WHEN prev IS NULL OR ts - prev >= INTERVAL '3' SECOND THEN 1 ELSE 0 END) \
                    OVER (PARTITION BY sensor_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid \
                  FROM (SELECT *, lag(ts) OVER (PARTITION BY sensor_id ORDER BY ts) AS prev FROM r_table) a) b \
                 GROUP BY sensor_id, sid";
    assert_eq!(
        difference(&client, "SELECT * FROM s WHERE sensor_id <> 99", batch).await,
        Vec::<String>::new()
    );
    for other in ["s2", "s3"] {
        assert_eq!(
            difference(
                &client,
                "SELECT * FROM s",
                &format!("SELECT * FROM {other}")
            )
            .await,
            Vec::<String>::new(),
            "{other}: the three SESSION spellings agree"
        );
    }
    assert!(
        column(&client, "SELECT count(*) FROM s").await[0]
            .as_deref()
            .is_some_and(|n| n.parse::<i64>().unwrap() > 4),
        "several sessions per sensor"
    );
    // A batch query cannot merge sessions: it is refused, not answered wrong.
    let err = client
        .batch_execute("SELECT count(*) FROM r_table GROUP BY SESSION(ts, INTERVAL '3' SECOND)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
    let plan = column(&client, "EXPLAIN MATERIALIZED VIEW s").await;
    assert!(
        plan.iter()
            .flatten()
            .any(|l| l.starts_with("SessionWindow")),
        "{plan:?}"
    );
}
