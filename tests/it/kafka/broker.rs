//! [`Broker`]: a tansu process (a Kafka-protocol broker in Rust) on a free
//! loopback port with in-memory storage, and the rskafka calls tests make on
//! it (create a topic, produce). Killed when dropped. Without the tansu
//! binary it panics with how to get it: Kafka tests fail, never skip.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tempfile::TempDir;

use super::{TIMEOUT, bounded};

/// The tansu binary: `$RUNNEL_TANSU`, else where scripts/test.sh puts it.
fn tansu_binary() -> PathBuf {
    let path = match std::env::var_os("RUNNEL_TANSU") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/runnel/tools/bin/tansu")
        }
    };
    assert!(
        path.is_file(),
        "the Kafka-protocol broker tansu is not at {}; run scripts/test.sh, which installs it \
         (or point RUNNEL_TANSU at a tansu 0.6 binary)",
        path.display()
    );
    path
}

/// A port nobody listens on right now.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A tansu broker; killed when dropped.
pub(super) struct Broker {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Broker {
    pub(super) fn start() -> Broker {
        let mut broker = Broker {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for the broker log"),
        };
        // Another process may take the port between our probe and tansu's
        // bind; a broker that exits at once gets another port.
        for _ in 0..3 {
            if broker.spawn() {
                return broker;
            }
            broker.port = free_port();
        }
        panic!(
            "tansu did not start on three free ports; its log:\n{}",
            broker.log()
        );
    }

    /// Starts tansu on `self.port`; false if it exited before listening.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the broker log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not accept connections on port {} within {TIMEOUT:?}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub(super) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh broker (empty: storage is in memory) on the port of
    /// the killed one.
    pub(super) fn start_again(&mut self) {
        assert!(
            self.spawn(),
            "tansu did not start again on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    async fn client(&self) -> Client {
        bounded(
            "connecting rskafka to tansu",
            ClientBuilder::new(vec![self.address()]).build(),
        )
        .await
        .unwrap_or_else(|e| panic!("rskafka could not connect to tansu: {e}\n{}", self.log()))
    }

    pub(super) async fn create_topic(&self, topic: &str, partitions: i32) {
        let client = self.client().await;
        let controller = client.controller_client().expect("controller client");
        bounded(
            "creating a topic",
            controller.create_topic(topic, partitions, 1, 5_000),
        )
        .await
        .unwrap_or_else(|e| panic!("creating topic {topic}: {e}\n{}", self.log()));
    }

    /// Appends `records` to one partition, one record per batch; returns
    /// their offsets. One per batch because tansu 0.6 answers a fetch from
    /// an offset inside a batch with the wrong batches, and ListOffsets
    /// (latest) with the last batch's first offset + 1; at batch boundaries
    /// both are right.
    pub(super) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Vec<i64> {
        let client = self.client().await;
        let pc = bounded(
            "a partition client",
            client.partition_client(topic, partition, UnknownTopicHandling::Retry),
        )
        .await
        .unwrap_or_else(|e| panic!("partition client for {topic}/{partition}: {e}"));
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            let offset = bounded("producing", pc.produce(vec![r], Compression::NoCompression))
                .await
                .unwrap_or_else(|e| {
                    panic!("producing to {topic}/{partition}: {e}\n{}", self.log())
                });
            offsets.extend(offset);
        }
        offsets
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
