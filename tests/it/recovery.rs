//! Checkpoints and recovery (docs/design/0008): a server killed with
//! SIGKILL, or crashed at a named fault point, comes back from its last
//! checkpoint, replays its sources from the recorded positions, and ends
//! with every view equal to the batch answer over all the input and every
//! Parquet sink holding each row exactly once. A damaged checkpoint stops
//! startup with a message naming the file; a failing checkpoint write is
//! reported and retried while everything keeps running.
//!
//! Time moves only by FLUSH and CHECKPOINT; the periodic interval is set
//! long so that the tests decide where checkpoints fall.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use crate::harness::{TestServer, column};
use crate::views::{COLUMNS, Readings, append, difference, load};

/// No periodic checkpoints: the test places them with CHECKPOINT / FLUSH.
const MANUAL: &[&str] = &["--checkpoint-interval", "3600"];

/// The views every test here runs, with the batch query each must equal
/// over table `r_all` (all the input). Windowed, updating (COUNT
/// DISTINCT), sessions and a view on a view.
pub const VIEWS: &[(&str, &str, &str)] = &[
    (
        "w",
        "SELECT window_start, sensor_id, count(*) AS n, round(avg(temperature), 6) AS a, \
         min(temperature) AS lo, max(temperature) AS hi \
         FROM r GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), sensor_id",
        "SELECT date_bin(INTERVAL '10' SECOND, ts) AS window_start, sensor_id, count(*) AS n, \
         round(avg(temperature), 6) AS a, min(temperature) AS lo, max(temperature) AS hi \
         FROM r_all WHERE ts < (SELECT date_bin(INTERVAL '10' SECOND, max(ts) - INTERVAL '2' SECOND) FROM r_all) \
         GROUP BY 1, 2",
    ),
    (
        "u",
        "SELECT sensor_id, count(*) AS n, count(DISTINCT temperature) AS d, round(sum(temperature), 6) AS s \
         FROM r GROUP BY sensor_id",
        "SELECT sensor_id, count(*) AS n, count(DISTINCT temperature) AS d, round(sum(temperature), 6) AS s \
         FROM r_all GROUP BY sensor_id",
    ),
    (
        "ww",
        "SELECT sensor_id, sum(n) AS n, max(hi) AS hi FROM w GROUP BY sensor_id",
        "SELECT sensor_id, count(*) AS n, max(temperature) AS hi FROM r_all \
         WHERE ts < (SELECT date_bin(INTERVAL '10' SECOND, max(ts) - INTERVAL '2' SECOND) FROM r_all) \
         GROUP BY sensor_id",
    ),
];

async fn define(client: &Client, input: &Path, sink: Option<&Path>) {
    append(input, &[]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON",
            input.display()
        ))
        .await
        .unwrap();
    define_views(client, sink).await;
}

/// The views of [`VIEWS`] over source `r`, and a sink of `w` under `sink`.
pub async fn define_views(client: &Client, sink: Option<&Path>) {
    for (name, query, _) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    if let Some(path) = sink {
        client
            .batch_execute(&format!(
                "CREATE SINK w_archive FROM w WITH (connector = 'parquet', path = '{}', \
                 rollover_rows = '50')",
                path.display()
            ))
            .await
            .unwrap();
    }
}

/// Every view (and the sink's archive) against the batch answer over
/// `lines`, loaded into a fresh table.
pub async fn check(client: &Client, lines: &[String], sink: bool, what: &str) {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS r_all; \
             CREATE TABLE r_all (sensor_id INT, temperature DOUBLE, ts TIMESTAMP)",
        )
        .await
        .unwrap();
    load(client, "r_all", lines).await;
    for (name, _, batch) in VIEWS {
        let diff = difference(client, &format!("SELECT * FROM {name}"), batch).await;
        assert!(diff.is_empty(), "{what}: view {name} differs: {diff:?}");
    }
    if sink {
        // The archive (the sink read as a relation) holds the view's rows
        // exactly once: EXCEPT ALL sees a doubled row as a difference.
        let diff = difference(client, "SELECT * FROM w_archive", "SELECT * FROM w").await;
        assert!(diff.is_empty(), "{what}: the sink's files differ: {diff:?}");
    }
}

async fn records_in(client: &Client) -> i64 {
    column(
        client,
        "SELECT records_in FROM runnel_catalog.sources WHERE name = 'r'",
    )
    .await[0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap()
}

struct Scene {
    _dir: tempfile::TempDir,
    data: PathBuf,
    input: PathBuf,
    archive: PathBuf,
    readings: Readings,
    written: Vec<String>,
}

impl Scene {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Scene {
            data: dir.path().join("data"),
            input: dir.path().join("r.json"),
            archive: dir.path().join("archive"),
            _dir: dir,
            readings: Readings::new(seed, 5, 200_000, 1_500_000),
            written: Vec::new(),
        }
    }

    /// Appends a chunk of readings to the input file.
    fn more(&mut self) -> usize {
        let chunk = self.readings.chunk(150..400);
        append(&self.input, &chunk);
        self.written.extend(chunk.iter().cloned());
        chunk.len()
    }
}

/// A server with the views and the sink over two flushed chunks of input
/// (FLUSH with a sink takes a checkpoint).
async fn running(seed: u64) -> (Scene, TestServer, Client) {
    let mut scene = Scene::new(seed);
    let server = TestServer::start_in(&scene.data, MANUAL);
    let client = server.client().await;
    define(&client, &scene.input, Some(&scene.archive)).await;
    for _ in 0..2 {
        scene.more();
        client.batch_execute("FLUSH").await.unwrap();
    }
    (scene, server, client)
}

#[tokio::test]
async fn views_and_a_sink_continue_from_the_checkpoint_after_kill9() {
    let (mut scene, mut server, client) = running(11).await;
    client.batch_execute("CHECKPOINT").await.unwrap();
    let checkpoints = column(
        &client,
        "SELECT state FROM runnel_catalog.checkpoints ORDER BY epoch",
    )
    .await;
    assert!(
        checkpoints.len() >= 3 && checkpoints.iter().all(|s| s.as_deref() == Some("complete")),
        "{checkpoints:?}"
    );
    // Read (some of it into the views and the sink's pending files) after
    // the last checkpoint, then lost with the process: replayed after the
    // restart.
    let after = scene.more() + scene.more();
    server.kill9();
    let after = after + scene.more();

    let server = TestServer::start_in(&scene.data, MANUAL);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, true, "after kill -9").await;
    // Only what came after the checkpoint was read again: once by each of
    // the two views reading the source.
    assert_eq!(records_in(&client).await, 2 * after as i64);
    // And the restored server goes on taking checkpoints and input.
    scene.more();
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, true, "after more input").await;
}

#[tokio::test]
async fn a_clean_stop_takes_a_last_checkpoint_and_nothing_is_read_twice() {
    let (mut scene, mut server, client) = running(12).await;
    drop(client);
    assert!(server.stop().await.success());
    let fresh = scene.more();
    let server = TestServer::start_in(&scene.data, MANUAL);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, true, "after a clean stop").await;
    assert_eq!(records_in(&client).await, 2 * fresh as i64);
}

/// Crashes the server at `point` during the second checkpoint, restarts it
/// without the fault, and checks that nothing was lost or doubled.
async fn crash_at(point: &str, seed: u64) {
    let mut scene = Scene::new(seed);
    let fault = format!("{point}=crash@2");
    let mut server =
        TestServer::start_in_env(&scene.data, MANUAL, &[("RUNNEL_FAULTS", fault.as_str())]);
    let client = server.client().await;
    define(&client, &scene.input, Some(&scene.archive)).await;
    scene.more();
    // The first checkpoint (FLUSH with a sink takes one) passes the point.
    client.batch_execute("FLUSH").await.unwrap();
    scene.more();
    let crashed = client.batch_execute("FLUSH").await;
    assert!(
        crashed.is_err(),
        "the second checkpoint should crash at {point}"
    );
    let status = server.wait_exit().await;
    assert!(!status.success(), "{point}: {status:?}");
    assert!(
        server
            .stderr()
            .contains(&format!("fault injected at {point}")),
        "{}",
        server.stderr()
    );
    scene.more();
    let server = TestServer::start_in(&scene.data, MANUAL);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, true, point).await;
}

#[tokio::test]
async fn a_crash_after_the_state_is_written_keeps_the_previous_checkpoint() {
    crash_at("after_state_write", 21).await;
}

#[tokio::test]
async fn a_crash_before_the_manifest_switch_keeps_the_previous_checkpoint() {
    crash_at("before_manifest_switch", 22).await;
}

#[tokio::test]
async fn a_crash_while_the_sink_commits_is_finished_by_the_restart() {
    crash_at("during_sink_commit", 23).await;
}

#[tokio::test]
async fn a_failing_checkpoint_write_is_reported_retried_and_nothing_stops() {
    let mut scene = Scene::new(31);
    let server = TestServer::start_in_env(
        &scene.data,
        MANUAL,
        &[("RUNNEL_FAULTS", "after_state_write=error*2")],
    );
    let client = server.client().await;
    define(&client, &scene.input, Some(&scene.archive)).await;
    scene.more();
    for _ in 0..2 {
        let e = client.batch_execute("CHECKPOINT").await.unwrap_err();
        let db = e.as_db_error().expect("an error from the server");
        assert_eq!(db.code().code(), "58030", "{db:?}");
        assert!(db.message().contains("injected failure"), "{db:?}");
    }
    let states = column(
        &client,
        "SELECT state FROM runnel_catalog.checkpoints ORDER BY epoch",
    )
    .await;
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states
            .iter()
            .all(|s| s.as_deref().unwrap().starts_with("failed: ")),
        "{states:?}"
    );
    // The views kept running; the next checkpoint is taken.
    scene.more();
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, true, "after failed checkpoints").await;
    let last = column(
        &client,
        "SELECT state FROM runnel_catalog.checkpoints ORDER BY epoch DESC LIMIT 1",
    )
    .await;
    assert_eq!(last, vec![Some("complete".to_string())]);
}

#[tokio::test]
async fn a_damaged_checkpoint_stops_startup_naming_the_file_and_the_way_out() {
    let mut scene = Scene::new(41);
    let mut server = TestServer::start_in(&scene.data, MANUAL);
    let client = server.client().await;
    define(&client, &scene.input, None).await;
    scene.more();
    client.batch_execute("FLUSH; CHECKPOINT").await.unwrap();
    server.kill9();
    // Flip a byte in one state file.
    let root = scene.data.join("checkpoints");
    let current = std::fs::read_to_string(root.join("CURRENT")).unwrap();
    let dir = root.join(format!("{:012}", current.trim().parse::<u64>().unwrap()));
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".contents"))
        .expect("a view's state file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&scene.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(stderr.contains(&name), "{stderr}");
    assert!(stderr.contains("--discard-checkpoints"), "{stderr}");

    // The way out: start without the checkpoint; views are rebuilt from
    // the start of their input.
    let mut args = MANUAL.to_vec();
    args.push("--discard-checkpoints");
    let server = TestServer::start_in(&scene.data, &args);
    let client = server.client().await;
    scene.more();
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &scene.written, false, "after discarding").await;
}
