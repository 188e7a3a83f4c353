//! The crash test: a Kafka-fed workload (windowed, updating and stacked
//! views, and a Parquet sink) whose server is killed with SIGKILL at random
//! moments, several times, while records keep arriving and checkpoints are
//! taken every 300 ms. After the last restart and a FLUSH every view equals
//! the batch answer over every record produced, and the sink's files hold
//! the view's rows exactly once. Bounded: a few thousand records, four
//! kills.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::broker::Broker;
use super::record;
use crate::harness::TestServer;
use crate::recovery::{check, define_views};
use crate::views::{COLUMNS, Readings, line};

const TOPIC: &str = "readings";
const KILLS: usize = 4;

/// Produces `lines` keyed by sensor: sensor parity picks the partition,
/// so each sensor's readings stay in order.
async fn produce(broker: &Broker, lines: &[String]) {
    let mut parts: [Vec<_>; 2] = [Vec::new(), Vec::new()];
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let sensor = v["sensor_id"].as_i64().unwrap() as usize;
        parts[sensor % 2].push(record(Some(l.clone().into_bytes())));
    }
    for (p, records) in parts.into_iter().enumerate() {
        broker.produce(TOPIC, p as i32, records).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_a_parquet_sink_survive_kill9_at_random_moments() {
    let started = Instant::now();
    let broker = Broker::start();
    broker.create_topic(TOPIC, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let args = ["--checkpoint-interval", "0.3"];
    let mut rng = StdRng::seed_from_u64(0x6b61666b61);
    let mut readings = Readings::new(77, 5, 200_000, 1_500_000);
    let mut written: Vec<String> = Vec::new();

    let mut server = TestServer::start_in(&data, &args);
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'kafka', topic = '{TOPIC}', \
             properties.bootstrap.server = '{}') FORMAT JSON",
            broker.address()
        ))
        .await
        .unwrap();
    define_views(&client, Some(&archive)).await;
    for _ in 0..KILLS {
        let chunk = readings.chunk(300..600);
        produce(&broker, &chunk).await;
        written.extend(chunk);
        // A random moment: mid-read, mid-checkpoint or mid-commit.
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1200))).await;
        server.kill9();
        server = TestServer::start_in(&data, &args);
    }
    let client = server.client().await;
    let mut last = readings.chunk(300..600);
    // One closing reading per partition at the same event time, so that
    // the watermark (the minimum over partitions) is the newest reading's
    // minus the bound, as in the batch answer.
    let end = readings.newest + 5_000_000;
    last.push(line(3, 0.0, end));
    last.push(line(4, 0.0, end));
    produce(&broker, &last).await;
    written.extend(last);
    client.batch_execute("FLUSH").await.unwrap();
    check(&client, &written, true, "after four kills").await;
    let restored: i64 = client
        .query_one(
            "SELECT count(*) FROM runnel_catalog.checkpoints WHERE state = 'complete'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(restored > 0, "the last run took no checkpoint");
    eprintln!(
        "crash test: {} records, {KILLS} kills, {:?}",
        written.len(),
        started.elapsed()
    );
}
