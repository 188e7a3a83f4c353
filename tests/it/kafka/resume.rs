//! A kafka reader resumed at the partition positions a checkpoint barrier
//! recorded reads every later record once: none lost, none twice, whatever
//! the start mode says. Driven through the source API (`open_reader_at`,
//! `checkpoint_requests`), the calls the checkpoint coordinator makes,
//! because the SQL-level recovery tests need the whole coordinator.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use datafusion::prelude::SessionContext;
use runnel::connectors::{SourceReader, SourceRuntime, SourceSpec};
use runnel::sql::{Parser, Statement};
use runnel::stream::{Barrier, BarrierKind, Message};

use super::broker::Broker;
use super::{TIMEOUT, records};

async fn source(broker: &Broker, topic: &str, extra: &str) -> Arc<SourceRuntime> {
    let sql = broker.create_sql("k", topic, "", extra);
    let parsed = Parser::new().parse_single(&sql).unwrap().unwrap();
    let Statement::CreateSource(create) = parsed.statement else {
        panic!("not a CREATE SOURCE: {sql}");
    };
    let declared = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
    ]));
    let (spec, connector) =
        SourceSpec::try_new(&create, declared, &SessionContext::new().state()).unwrap();
    SourceRuntime::try_new(spec, connector, true).await.unwrap()
}

async fn next(reader: &mut SourceReader) -> Message {
    tokio::time::timeout(TIMEOUT, reader.next())
        .await
        .unwrap_or_else(|_| panic!("no message within {TIMEOUT:?}"))
        .expect("the reader ended")
        .unwrap()
}

fn ids(message: &Message) -> Vec<i32> {
    match message {
        Message::Data(b) => {
            let ids = b.column(0).as_primitive::<Int32Type>();
            (0..ids.len()).map(|i| ids.value(i)).collect()
        }
        _ => Vec::new(),
    }
}

/// The ids before the next barrier of `kind`.
async fn ids_until(reader: &mut SourceReader, kind: BarrierKind) -> Vec<i32> {
    let mut out = Vec::new();
    loop {
        let m = next(reader).await;
        if let Message::Barrier(Barrier { kind: k, .. }) = m
            && k == kind
        {
            return out;
        }
        out.extend(ids(&m));
    }
}

/// Everything the topic holds now, by FLUSH.
async fn ids_until_flushed(reader: &mut SourceReader, ticket: u64) -> Vec<i32> {
    reader.flush_requests().request(ticket);
    ids_until(reader, BarrierKind::Flush(ticket)).await
}

#[tokio::test]
async fn a_reader_resumed_at_recorded_offsets_reads_each_later_record_once() {
    let broker = Broker::start();
    broker.create_topic("resume", 2).await;
    broker.produce("resume", 0, records(0..20)).await;
    broker.produce("resume", 1, records(100..120)).await;
    let earliest = source(&broker, "resume", "").await;

    let mut reader = earliest.open_reader().unwrap();
    let mut before = Vec::new();
    while before.len() < 15 {
        before.extend(ids(&next(&mut reader).await));
    }
    let checkpoints = reader.checkpoint_requests();
    checkpoints.request(1);
    before.extend(ids_until(&mut reader, BarrierKind::Checkpoint).await);
    let positions = checkpoints.take_positions(1).unwrap();
    let splits: Vec<&str> = positions.keys().map(String::as_str).collect();
    assert_eq!(splits, ["partition 0", "partition 1"], "{positions:?}");
    drop(reader);

    // Written while no reader runs.
    broker.produce("resume", 0, records(20..25)).await;
    broker.produce("resume", 1, records(120..125)).await;
    let all: BTreeSet<i32> = (0..25).chain(100..125).collect();
    let mut expected: BTreeSet<i32> = all
        .difference(&before.iter().copied().collect())
        .copied()
        .collect();

    // The start mode does not matter for recorded partitions: `latest`
    // would skip what was written meanwhile.
    let latest = source(&broker, "resume", ", scan.startup.mode = 'latest'").await;
    for (i, runtime) in [earliest, latest].iter().enumerate() {
        let mut resumed = runtime.open_reader_at(Some(&positions)).unwrap();
        let after = ids_until_flushed(&mut resumed, 1).await;
        let unique: BTreeSet<i32> = after.iter().copied().collect();
        assert_eq!(unique.len(), after.len(), "read twice: {after:?}");
        assert_eq!(unique, expected, "source {i}");
        // Records arriving later follow, once.
        let id = 1000 + i as i32;
        broker.produce("resume", 1, records([id])).await;
        let mut live = Vec::new();
        while live.is_empty() {
            live.extend(ids(&next(&mut resumed).await));
        }
        assert_eq!(live, [id]);
        expected.insert(id);
    }
}
