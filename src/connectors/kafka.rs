//! The `kafka` connector: every partition of one topic, read by offset.
//!
//! Each reader opens its own client and reads each partition as a split
//! (`partition N`) from its start position: the earliest offset, the latest,
//! or offsets given per partition. runnel keeps offsets itself, as Flink
//! does: no consumer group, nothing committed to the broker. Fetches ask for
//! up to 1 MiB so that decoding runs over large chunks.
//!
//! Resuming. A partition's position is its next offset (`offset=N`); a
//! reader resumed from a checkpoint reads each recorded partition from
//! there, whatever the start mode says (partitions not recorded start as
//! configured). An offset no longer in the partition (deleted by
//! retention) goes on from the nearest one kept, with a warning.
//!
//! Broker trouble while running (broker down, connection reset, leader
//! moved) is retried with exponential backoff and shown in the source's
//! state; it never ends a reader. Only the reader's own end (dropped, or a
//! bad record under `on_error = 'fail'`) stops it. This file moves bytes and
//! builds the metadata columns; it must not decode records or compute
//! watermarks (the split writer does).

mod config;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::RecordAndOffset;
use tokio::task::JoinSet;

use self::config::{StartAt, parse_brokers, parse_start};
use super::options::{Options, invalid};
use super::position::{ParsedPosition, PositionText};
use super::records::RawRecords;
use super::runtime::{Downstream, ReaderContext, ReadySignal, SourceStats, SplitWriter};
use super::{Connector, SourceSpec, SplitPositions};
use crate::error::{Error, Result};

/// Bytes asked for per partition and fetch: big chunks decode fast.
const FETCH_MAX_BYTES: i32 = 1 << 20;
/// How long the broker may hold a fetch open while it has no data; also
/// the least time between two empty fetches, so a reader never spins.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(250);
/// CREATE SOURCE gives up on the broker after this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// A request without an answer for this long has failed (a black-holed
/// address would otherwise hang until the OS gives up on the connection).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delays while running: doubling from the first up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct KafkaConnector {
    topic: String,
    /// Bootstrap brokers, `host:port` each.
    brokers: Vec<String>,
    start: StartAt,
}

impl KafkaConnector {
    pub fn configure(options: &mut Options) -> Result<Self> {
        let topic = options.required("topic", &["kafka.topic"])?;
        let brokers = options.required(
            "properties.bootstrap.server",
            &["properties.bootstrap.servers", "bootstrap.servers"],
        )?;
        let mode = options.take("scan.startup.mode", &[]);
        let offsets = options.take(
            "scan.startup.specific_offsets",
            &["scan.startup.specific-offsets"],
        );
        Ok(KafkaConnector {
            topic,
            brokers: parse_brokers(&brokers)?,
            start: parse_start(mode.as_deref(), offsets.as_deref())?,
        })
    }

    /// The broker list as written in messages.
    fn address(&self) -> String {
        self.brokers.join(",")
    }
}

/// A client that does not retry by itself: its retry layers nest (a fetch
/// retries a connect that retries the brokers), which hides an outage for
/// seconds. Trouble reaches our loop at once and shows in the source's
/// state. What the client learns from an error (a moved leader, a broken
/// connection) it still keeps for the next try.
async fn connect(brokers: &[String]) -> Result<Client, KafkaError> {
    ClientBuilder::new(brokers.to_vec())
        .client_id("runnel")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            base: 2.0,
            deadline: Some(Duration::ZERO),
        })
        .build()
        .await
}

/// The partitions of `topic`, or why they cannot be had.
async fn partitions_of(client: &Client, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
    let topics = client.list_topics().await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect()))
}

/// A Kafka error in one line: the client's own rendering wraps the cause in
/// retry envelopes and whole request contexts.
fn describe(e: &KafkaError) -> String {
    use rskafka::{BackoffError, ConnectionError};
    match e {
        KafkaError::ServerError {
            protocol_error,
            error_message,
            ..
        } => match error_message {
            Some(m) => format!("{protocol_error}: {m}"),
            None => protocol_error.to_string(),
        },
        KafkaError::RetryFailed(BackoffError::DeadlineExceded { source, .. })
        | KafkaError::Connection(ConnectionError::RetryFailed(BackoffError::DeadlineExceded {
            source,
            ..
        })) => match source.downcast_ref::<KafkaError>() {
            Some(inner) => describe(inner),
            None => tidy(source.to_string()),
        },
        other => tidy(other.to_string()),
    }
}

/// One broker that cannot be reached reads `error connecting to broker
/// "a:1": IO Error: Connection refused`; our messages name the brokers.
fn tidy(text: String) -> String {
    let single = text.matches("error connecting to broker ").count() == 1;
    match text
        .strip_prefix("error connecting to broker \"")
        .and_then(|rest| rest.split_once("\": "))
    {
        Some((_, why)) if single => why.strip_prefix("IO Error: ").unwrap_or(why).to_string(),
        _ => text,
    }
}

/// A partition's resume position: the offset of the next record to read.
fn next_offset(offset: i64) -> String {
    PositionText::new().with("offset", offset).finish()
}

/// The next offsets recorded at a checkpoint, by partition.
fn recorded_offsets(positions: &SplitPositions) -> Result<BTreeMap<i32, i64>> {
    let mut offsets = BTreeMap::new();
    for (split, text) in positions {
        let p = ParsedPosition::parse(split, text)?;
        let partition = split
            .strip_prefix("partition ")
            .and_then(|n| n.parse::<i32>().ok())
            .ok_or_else(|| p.error("it is not a Kafka partition"))?;
        offsets.insert(partition, p.get("offset")?);
    }
    Ok(offsets)
}

/// Where `partition` starts, when that needs no broker: its recorded
/// offset, which wins over the start mode, or an offset given for it.
fn known_start(recorded: &BTreeMap<i32, i64>, start: &StartAt, partition: i32) -> Option<i64> {
    match (recorded.get(&partition), start) {
        (Some(&offset), _) => Some(offset),
        (None, StartAt::Offsets(given)) => given.get(&partition).copied(),
        (None, _) => None,
    }
}

fn unreachable(address: &str, why: &str) -> Error {
    let which = if address.contains(',') {
        "any Kafka broker of"
    } else {
        "the Kafka broker at"
    };
    Error::Plan {
        sqlstate: "08001",
        message: format!("could not connect to {which} {address}: {why}"),
    }
}

#[async_trait]
impl Connector for KafkaConnector {
    fn metadata_kinds(&self) -> Vec<(&'static str, DataType)> {
        vec![
            ("partition", DataType::Int32),
            ("offset", DataType::Int64),
            ("key", DataType::Binary),
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
        ]
    }

    async fn check(&self, _spec: &SourceSpec) -> Result<()> {
        let address = self.address();
        let attempt = async {
            let client = connect(&self.brokers)
                .await
                .map_err(|e| unreachable(&address, &describe(&e)))?;
            let partitions = partitions_of(&client, &self.topic)
                .await
                .map_err(|e| unreachable(&address, &describe(&e)))?
                .ok_or_else(|| Error::Plan {
                    sqlstate: "42704",
                    message: format!("topic \"{}\" does not exist on {address}", self.topic),
                })?;
            if let StartAt::Offsets(offsets) = &self.start
                && let Some(p) = offsets.keys().find(|p| !partitions.contains(p))
            {
                return Err(invalid(format!(
                    "scan.startup.specific_offsets names partition {p}, but topic \"{}\" has \
                     partitions {}",
                    self.topic,
                    partitions
                        .iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Ok(())
        };
        tokio::time::timeout(CHECK_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(unreachable(
                    &address,
                    &format!("no answer within {CHECK_TIMEOUT:?}"),
                ))
            })
    }

    fn start(&self, ctx: &mut ReaderContext) -> Result<()> {
        let reader = Arc::new(TopicReader {
            connector: self.clone(),
            resume: recorded_offsets(&ctx.resume)?,
            spec: ctx.spec.clone(),
            stats: ctx.stats.clone(),
            downstream: Downstream::One(ctx.sender()),
            retrying: AtomicUsize::new(0),
        });
        ctx.spawn(reader.run(ctx.ready_signal()));
        Ok(())
    }
}

/// One reader of the topic: shared by its partition tasks.
struct TopicReader {
    connector: KafkaConnector,
    /// Next offsets recorded at a checkpoint, by partition: they win over
    /// the start mode.
    resume: BTreeMap<i32, i64>,
    spec: Arc<SourceSpec>,
    stats: Arc<SourceStats>,
    downstream: Downstream,
    /// Partition tasks of this reader that are retrying now; the state goes
    /// back to `running` when the last one succeeds.
    retrying: AtomicUsize,
}

/// What a fetch found.
enum Fetched {
    Records(Vec<RecordAndOffset>, i64),
    /// The offset is no longer (or not yet) in the partition.
    OutOfRange,
}

impl TopicReader {
    /// Connects, then reads every partition in a task of its own. The
    /// tasks live in a set owned by this future, which the reader owns:
    /// dropping the reader stops them all.
    async fn run(self: Arc<Self>, ready: ReadySignal) -> Result<()> {
        let topic = self.connector.topic.clone();
        let client = Arc::new(
            self.retry("connecting", || async {
                connect(&self.connector.brokers)
                    .await
                    .map_err(|e| describe(&e))
            })
            .await,
        );
        let partitions = self
            .retry("listing partitions", || async {
                match partitions_of(&client, &topic).await {
                    Ok(Some(p)) if !p.is_empty() => Ok(p),
                    Ok(_) => Err(format!("topic \"{topic}\" does not exist")),
                    Err(e) => Err(describe(&e)),
                }
            })
            .await;
        // Every partition is announced before any is read: an empty one
        // holds back the watermark (until idle_timeout), and FLUSH knows
        // which splits to wait for.
        let mut writers = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let writer = SplitWriter::new(
                format!("partition {partition}"),
                self.spec.clone(),
                self.stats.clone(),
                self.downstream.clone(),
            );
            writer.announce().await?;
            writers.push((partition, writer));
        }
        ready.send().await?;
        let mut tasks = JoinSet::new();
        for (partition, writer) in writers {
            tasks.spawn(
                self.clone()
                    .read_partition(client.clone(), partition, writer),
            );
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(crate::internal!("a Kafka partition reader failed: {e}")),
            }
        }
        Ok(())
    }

    async fn read_partition(
        self: Arc<Self>,
        client: Arc<Client>,
        partition: i32,
        mut writer: SplitWriter,
    ) -> Result<()> {
        let topic = &self.connector.topic;
        let what = format!("partition {partition}");
        let pc = self
            .retry(&what, || async {
                client
                    .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|e| describe(&e))
            })
            .await;
        let pc = &pc;
        let start = &self.connector.start;
        let mut offset = match known_start(&self.resume, start, partition) {
            Some(offset) => offset,
            None => {
                self.retry(&what, || async {
                    let at = match start {
                        StartAt::Latest => OffsetAt::Latest,
                        _ => OffsetAt::Earliest,
                    };
                    pc.get_offset(at).await.map_err(|e| describe(&e))
                })
                .await
            }
        };
        // Recorded at once: a checkpoint before the first record must not
        // leave the partition to the start mode (`latest` would move on).
        writer.resume_at(next_offset(offset));
        writer.tell_position().await?;
        loop {
            let asked = Instant::now();
            // The fetch's high watermark tells what was there when it was
            // asked: only FLUSHes requested before that are answered by it.
            let flush_epoch = writer.stats().flush_epoch();
            let fetched = self
                .retry(&what, || async {
                    let max_wait = FETCH_MAX_WAIT.as_millis() as i32;
                    match pc.fetch_records(offset, 1..FETCH_MAX_BYTES, max_wait).await {
                        Ok((records, high)) => Ok(Fetched::Records(records, high)),
                        Err(KafkaError::ServerError {
                            protocol_error: ProtocolError::OffsetOutOfRange,
                            ..
                        }) => Ok(Fetched::OutOfRange),
                        Err(e) => Err(describe(&e)),
                    }
                })
                .await;
            match fetched {
                Fetched::OutOfRange => {
                    offset = self
                        .retry(&what, || self.offset_in_range(pc, partition, offset))
                        .await;
                    writer.resume_at(next_offset(offset));
                    writer.tell_position().await?;
                }
                Fetched::Records(mut records, high_watermark) => {
                    // Exactly the records from `offset` on, each once, even
                    // from a broker that answers with more.
                    let mut expected = offset;
                    records.retain(|r| {
                        let keep = r.offset >= expected;
                        if keep {
                            expected = r.offset + 1;
                        }
                        keep
                    });
                    if let Some(last) = records.last() {
                        let next = last.offset + 1;
                        self.deliver(&mut writer, partition, &records).await?;
                        // Past trailing records without a value too.
                        writer.resume_at(next_offset(next));
                        writer.tell_position().await?;
                        offset = next;
                    } else if let Some(rest) = FETCH_MAX_WAIT.checked_sub(asked.elapsed()) {
                        // The broker answered an empty fetch at once.
                        tokio::time::sleep(rest).await;
                    }
                    writer.set_lag(offset as u64, Some((high_watermark - offset).max(0)));
                    if offset >= high_watermark {
                        // Everything the partition held when the fetch was
                        // asked is delivered.
                        writer.caught_up_to(flush_epoch).await?;
                    }
                }
            }
        }
    }

    /// Where to go on when `offset` is out of the partition's range: the
    /// earliest kept record when older records were deleted, the end when
    /// the offset lies beyond it.
    async fn offset_in_range(
        &self,
        pc: &PartitionClient,
        partition: i32,
        offset: i64,
    ) -> std::result::Result<i64, String> {
        let earliest = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| describe(&e))?;
        let latest = pc
            .get_offset(OffsetAt::Latest)
            .await
            .map_err(|e| describe(&e))?;
        let moved = offset.clamp(earliest, latest.max(earliest));
        if moved == offset {
            // The broker's answers disagree (e.g. the partition moved
            // between them): ask again after a pause rather than spin.
            tokio::time::sleep(RETRY_CAP).await;
            return Ok(offset);
        }
        tracing::warn!(
            source = %self.spec.name,
            "kafka partition {partition}: offset {offset} is not in {earliest}..{latest}; \
             going on from {moved}"
        );
        Ok(moved)
    }

    /// Sends the records of one fetch to the split, in order. A record
    /// without a value (a tombstone: "delete this key") has nothing to
    /// decode; it is a bad record, counted and logged like one.
    async fn deliver(
        &self,
        writer: &mut SplitWriter,
        partition: i32,
        records: &[RecordAndOffset],
    ) -> Result<()> {
        let mut start = 0;
        for (i, r) in records.iter().enumerate() {
            if r.record.value.is_none() {
                if start < i {
                    self.send_chunk(writer, partition, &records[start..i])
                        .await?;
                }
                writer.reject(r.offset as u64, "null message value".into(), &[])?;
                start = i + 1;
            }
        }
        if start < records.len() {
            self.send_chunk(writer, partition, &records[start..])
                .await?;
        }
        Ok(())
    }

    /// Sends a run of records, which moves the partition's position to
    /// just after its last one (not after the whole fetch: a checkpoint may
    /// fall between two runs).
    async fn send_chunk(
        &self,
        writer: &mut SplitWriter,
        partition: i32,
        records: &[RecordAndOffset],
    ) -> Result<()> {
        if let Some(last) = records.last() {
            writer.resume_at(next_offset(last.offset + 1));
        }
        writer.records(self.chunk(partition, records)?).await
    }

    /// The payloads of a run of records with values, and the metadata
    /// columns asked for.
    fn chunk(&self, partition: i32, records: &[RecordAndOffset]) -> Result<RawRecords> {
        let bytes = records
            .iter()
            .map(|r| r.record.value.as_ref().map_or(0, Vec::len))
            .sum();
        let mut raw = RawRecords::with_capacity(records.len(), bytes);
        for r in records {
            raw.push(
                r.record.value.as_deref().unwrap_or_default(),
                r.offset as u64,
            );
        }
        for m in &self.spec.metadata {
            let column: ArrayRef = match m.kind.as_str() {
                "partition" => Arc::new(Int32Array::from_value(partition, records.len())),
                "offset" => Arc::new(Int64Array::from_iter_values(
                    records.iter().map(|r| r.offset),
                )),
                "key" => {
                    let key_bytes = records
                        .iter()
                        .map(|r| r.record.key.as_ref().map_or(0, Vec::len))
                        .sum();
                    let mut keys = BinaryBuilder::with_capacity(records.len(), key_bytes);
                    for r in records {
                        keys.append_option(r.record.key.as_deref());
                    }
                    Arc::new(keys.finish())
                }
                "timestamp" => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        records
                            .iter()
                            .map(|r| r.record.timestamp.timestamp_micros()),
                    )
                    .with_timezone("UTC"),
                ),
                other => return Err(crate::internal!("kafka metadata {other}")),
            };
            raw.metadata.push(column);
        }
        Ok(raw)
    }

    /// Runs `attempt` until it succeeds, each try bounded in time, backing
    /// off between failures and showing the last one in the source's state.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        let mut delay = RETRY_FIRST;
        let mut failing = false;
        loop {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, attempt())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
            match outcome {
                Ok(value) => {
                    if failing && self.retrying.fetch_sub(1, Ordering::Relaxed) == 1 {
                        self.stats.set_state("running");
                    }
                    return value;
                }
                Err(e) => {
                    if !failing {
                        failing = true;
                        self.retrying.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        source = %self.spec.name,
                        "kafka {}: {what}: {e}; retrying in {delay:?}",
                        self.connector.address()
                    );
                    self.stats.set_state(format!("retrying: {what}: {e}"));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_CAP);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_offsets_win_over_the_start_mode_for_their_partitions() {
        let positions = SplitPositions::from([
            ("partition 0".into(), next_offset(42)),
            ("partition 2".into(), next_offset(0)),
        ]);
        let recorded = recorded_offsets(&positions).unwrap();
        assert_eq!(recorded, BTreeMap::from([(0, 42), (2, 0)]));
        let given = StartAt::Offsets(BTreeMap::from([(0, 7), (1, 9)]));
        for start in [StartAt::Earliest, StartAt::Latest, given.clone()] {
            assert_eq!(known_start(&recorded, &start, 0), Some(42));
            assert_eq!(known_start(&recorded, &start, 2), Some(0));
        }
        // Partitions not recorded start as configured.
        assert_eq!(known_start(&recorded, &given, 1), Some(9));
        assert_eq!(known_start(&recorded, &StartAt::Latest, 1), None);
        assert_eq!(known_start(&BTreeMap::new(), &given, 0), Some(7));
    }

    #[test]
    fn positions_that_are_not_a_partitions_are_refused() {
        let bad = |split: &str, text: &str| {
            let positions = SplitPositions::from([(split.into(), text.into())]);
            let e = recorded_offsets(&positions).unwrap_err();
            assert_eq!(e.sqlstate(), "XX001", "{e}");
        };
        bad("datagen", "offset=1");
        bad("partition x", "offset=1");
        bad("partition 1", "rows=1");
    }
}
