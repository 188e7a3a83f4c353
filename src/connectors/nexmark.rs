//! The `nexmark` connector: the Nexmark benchmark's person, auction and bid
//! streams, from RisingWave's `nexmark` generator crate.
//!
//! One source is one table (`nexmark.table.type`); without a column list it
//! has the table's columns as RisingWave defines them, with `date_time` a
//! TIMESTAMP for WATERMARK clauses. The generator makes one event stream of
//! all three kinds (1 person : 3 auctions : 46 bids in every 50 events); a
//! source keeps the events of its kind, and `nexmark.event.num` counts the
//! whole stream, so a bid source and an auction source with the same number
//! cover the same stretch and their ids match up.
//!
//! Event data is deterministic by construction: the crate seeds each
//! event's values from its id. `nexmark.seed` moves the ids to another
//! stretch of the sequence, giving other values, just as reproducible. Event time
//! is `base + event number * min.event.gap.in.ns`, computed here exactly
//! (the crate rounds to milliseconds in f32); the base is the reader's
//! start unless `nexmark.base.time` fixes it. This file must not decode or
//! compute watermarks: the runtime does that from the batches.
//!
//! Resuming. The one split's position is the number of rows (events of its
//! kind) made so far and the base of event time (`rows=..;base_ms=..`). A
//! resumed reader makes exactly the events that follow; a base taken from
//! the wall clock moves forward over the time the source was down (never
//! back), so event time keeps pace with the clock. A throttled reader goes
//! on at its rate from the moment it resumes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringViewBuilder, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Auction, Bid, Event, EventType, Person};
use tokio::time::MissedTickBehavior;

use super::Connector;
use super::options::{Options, invalid};
use super::position::{ParsedPosition, PositionText};
use super::runtime::{ReaderContext, ReadySignal, SplitWriter};
use crate::error::{Error, Result};

/// Event-time spacing by default: the crate's 10,000 events per second.
const DEFAULT_GAP_NS: i64 = 100_000;
/// Rows per batch by default (RisingWave's `nexmark.max.chunk.size`).
const DEFAULT_CHUNK: i64 = 1024;
/// How often a throttled reader makes the events that are due.
const TICK: Duration = Duration::from_millis(10);

/// How a column's values are typed before any cast to a declared type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Text,
    Time,
}

use Kind::{Int, Text, Time};

const PERSON: &[(&str, Kind)] = &[
    ("id", Int),
    ("name", Text),
    ("email_address", Text),
    ("credit_card", Text),
    ("city", Text),
    ("state", Text),
    ("date_time", Time),
    ("extra", Text),
];
const AUCTION: &[(&str, Kind)] = &[
    ("id", Int),
    ("item_name", Text),
    ("description", Text),
    ("initial_bid", Int),
    ("reserve", Int),
    ("date_time", Time),
    ("expires", Time),
    ("seller", Int),
    ("category", Int),
    ("extra", Text),
];
const BID: &[(&str, Kind)] = &[
    ("auction", Int),
    ("bidder", Int),
    ("price", Int),
    ("channel", Text),
    ("url", Text),
    ("date_time", Time),
    ("extra", Text),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Table {
    Person,
    Auction,
    Bid,
}

impl Table {
    fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            Table::Person => PERSON,
            Table::Auction => AUCTION,
            Table::Bid => BID,
        }
    }

    fn event_type(self) -> EventType {
        match self {
            Table::Person => EventType::Person,
            Table::Auction => EventType::Auction,
            Table::Bid => EventType::Bid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::Person => "person",
            Table::Auction => "auction",
            Table::Bid => "bid",
        }
    }
}

fn arrow_type(kind: Kind) -> DataType {
    match kind {
        Int => DataType::Int64,
        Text => DataType::Utf8View,
        Time => DataType::Timestamp(TimeUnit::Nanosecond, None),
    }
}

#[derive(Debug, Clone)]
pub struct NexmarkConnector {
    table: Table,
    /// Moves the event ids, and so every value, to another stretch.
    seed: usize,
    /// Events of all kinds to generate; `None` is endless.
    event_num: Option<u64>,
    gap_ns: i64,
    /// Milliseconds since the epoch of event 0; `None` is the reader's start.
    base_time_ms: Option<i64>,
    chunk: usize,
    /// Wall-clock cap on events (of all kinds) per second.
    rate: Option<f64>,
}

impl NexmarkConnector {
    pub fn configure(options: &mut Options, declared: &SchemaRef) -> Result<Self> {
        let table = options.required("nexmark.table.type", &[])?;
        let table = match table.trim().to_ascii_lowercase().as_str() {
            "person" => Table::Person,
            "auction" => Table::Auction,
            "bid" => Table::Bid,
            _ => {
                return Err(invalid(format!(
                    "nexmark.table.type must be Person, Auction or Bid, not '{table}'"
                )));
            }
        };
        // The crate seeds each event's values from its id; a seed moves the
        // ids to another, equally reproducible stretch of the sequence (a
        // multiple of the 50-event cycle, so the person/auction/bid mix and
        // event times stay the same).
        let seed = options.int("nexmark.seed", &[], 0, 1_000_000)?.unwrap_or(0) as usize;
        let event_num = options
            .int("nexmark.event.num", &[], 0, i64::MAX)?
            .map(|n| n as u64);
        let gap_ns = options
            .int("nexmark.min.event.gap.in.ns", &[], 0, 3_600_000_000_000)?
            .unwrap_or(DEFAULT_GAP_NS);
        let base_time_ms = options.int("nexmark.base.time", &[], 0, i64::MAX / 1_000_000)?;
        let chunk = options
            .int("nexmark.max.chunk.size", &[], 1, 1 << 20)?
            .unwrap_or(DEFAULT_CHUNK) as usize;
        let rate = options.float("nexmark.rate.per.second", &[])?;
        if rate.is_some_and(|r| r <= 0.0) {
            return Err(invalid(
                "nexmark.rate.per.second must be above zero (leave it out for no limit)".into(),
            ));
        }
        for field in declared.fields() {
            let Some((_, kind)) = table.columns().iter().find(|(n, _)| n == field.name()) else {
                return Err(Error::Plan {
                    sqlstate: "42703",
                    message: format!(
                        "column \"{}\" is not a column of the nexmark {} table; its columns are {} \
                         (or leave out the column list)",
                        field.name(),
                        table.name(),
                        table
                            .columns()
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let dt = field.data_type();
            let fits = match kind {
                Int => {
                    dt.is_integer() || dt.is_floating() || matches!(dt, DataType::Decimal128(..))
                }
                Text => matches!(
                    dt,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ),
                Time => matches!(dt, DataType::Timestamp(..)),
            };
            if !fits {
                return Err(Error::Plan {
                    sqlstate: "42804",
                    message: format!(
                        "column \"{}\" of the nexmark {} table is {}, not {dt}",
                        field.name(),
                        table.name(),
                        match kind {
                            Int => "a BIGINT",
                            Text => "a VARCHAR",
                            Time => "a TIMESTAMP",
                        }
                    ),
                });
            }
        }
        Ok(NexmarkConnector {
            table,
            seed,
            event_num,
            gap_ns,
            base_time_ms,
            chunk,
            rate,
        })
    }
}

#[async_trait]
impl Connector for NexmarkConnector {
    fn default_columns(&self) -> Option<SchemaRef> {
        let fields: Vec<Field> = self
            .table
            .columns()
            .iter()
            .map(|(name, kind)| Field::new(*name, arrow_type(*kind), false))
            .collect();
        Some(Arc::new(Schema::new(fields)))
    }

    fn generates_rows(&self) -> bool {
        true
    }

    fn is_finite(&self) -> bool {
        self.event_num.is_some()
    }

    fn start(&self, ctx: &mut ReaderContext) -> Result<()> {
        let split = format!("nexmark-{}", self.table.name());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let (first, base_ms) = match ctx.resume.get(&split) {
            None => (0, self.base_time_ms.unwrap_or(now_ms)),
            Some(text) => {
                let p = ParsedPosition::parse(&split, text)?;
                let (first, recorded): (u64, i64) = (p.get("rows")?, p.get("base_ms")?);
                let base = match self.base_time_ms {
                    Some(fixed) => fixed,
                    None => {
                        // Where the next event would be on the clock, moved
                        // up to now if the source was down meanwhile.
                        let next = EventGenerator::new(crate_config(0, self.gap_ns, self.seed))
                            .with_type_filter(self.table.event_type())
                            .with_offset(first)
                            .global_offset();
                        let since_base = (next as i128 * self.gap_ns as i128 / 1_000_000)
                            .min(i64::MAX as i128) as i64;
                        recorded.max(now_ms.saturating_sub(since_base))
                    }
                };
                (first, base)
            }
        };
        let rows = Rows {
            table: self.table,
            schema: ctx.spec.schema.clone(),
            base_ns: base_ms.saturating_mul(1_000_000),
            gap_ns: self.gap_ns,
        };
        let generator = EventGenerator::new(crate_config(base_ms, self.gap_ns, self.seed))
            .with_type_filter(self.table.event_type())
            .with_offset(first);
        let writer = ctx.split(split);
        let pace = Pace {
            limit: self.event_num,
            chunk: self.chunk,
            rate: self.rate,
        };
        let ready = ctx.ready_signal();
        ctx.spawn(run(generator, rows, base_ms, writer, pace, ready));
        Ok(())
    }
}

/// How much a reader makes, and how fast.
struct Pace {
    /// Events of all kinds; `None` is endless.
    limit: Option<u64>,
    chunk: usize,
    /// Events of all kinds per second.
    rate: Option<f64>,
}

/// The split's position: rows made so far, and the base of event time.
fn position(rows: u64, base_ms: i64) -> String {
    PositionText::new()
        .with("rows", rows)
        .with("base_ms", base_ms)
        .finish()
}

/// The crate's configuration for event 0 at `base_ms` and one event per
/// `gap_ns` of event time (its delay is `us_per_unit / rate` microseconds).
fn crate_config(base_ms: i64, gap_ns: i64, seed: usize) -> NexmarkConfig {
    NexmarkConfig {
        base_time: base_ms as u64,
        first_event_id: seed * SEED_STRIDE,
        first_rate: 1000,
        next_rate: 1000,
        us_per_unit: gap_ns as usize,
        ..NexmarkConfig::default()
    }
}

/// Event ids per seed: a multiple of the crate's 50-event proportion cycle.
const SEED_STRIDE: usize = 1_000_000_000;

/// The reader loop: events that are due, a chunk at a time, from where
/// `generator` stands.
async fn run(
    mut generator: EventGenerator,
    rows: Rows,
    base_ms: i64,
    mut writer: SplitWriter,
    pace: Pace,
    ready: ReadySignal,
) -> Result<()> {
    let Pace { limit, chunk, rate } = pace;
    writer.announce().await?;
    writer.resume_at(position(generator.offset(), base_ms));
    writer.tell_position().await?;
    ready.send().await?;
    // The schedule counts events of all kinds from where this reader starts.
    let resumed_at = if generator.offset() == 0 {
        0
    } else {
        generator.global_offset()
    };
    let started = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let due = match rate {
            None => u64::MAX,
            Some(r) => {
                ticks.tick().await;
                resumed_at + (started.elapsed().as_secs_f64() * r) as u64
            }
        };
        let due = limit.map_or(due, |l| due.min(l));
        while generator.global_offset() < due {
            let mut events = Vec::with_capacity(chunk);
            while events.len() < chunk && generator.global_offset() < due {
                let number = generator.global_offset();
                if let Some(event) = generator.next() {
                    events.push((number, event));
                }
            }
            let batch = rows.batch(&events)?;
            writer.resume_at(position(generator.offset(), base_ms));
            writer.batch(batch, generator.global_offset()).await?;
            writer
                .generated_due(rate.is_some(), limit.is_some())
                .await?;
        }
        if limit.is_some_and(|l| generator.global_offset() >= l) {
            break;
        }
    }
    writer.finish().await
}

/// Turns events into batches of the source's columns.
struct Rows {
    table: Table,
    schema: SchemaRef,
    base_ns: i64,
    gap_ns: i64,
}

impl Rows {
    /// Event time of event `number`, exactly.
    fn time_ns(&self, number: u64) -> i64 {
        let t = self.base_ns as i128 + number as i128 * self.gap_ns as i128;
        t.min(i64::MAX as i128) as i64
    }

    fn batch(&self, events: &[(u64, Event)]) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let array = self.column(field.name(), events)?;
                Ok(if array.data_type() == field.data_type() {
                    array
                } else {
                    cast(&array, field.data_type())?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn column(&self, name: &str, events: &[(u64, Event)]) -> Result<ArrayRef> {
        let people = || {
            events.iter().filter_map(|(n, e)| match e {
                Event::Person(p) => Some((*n, p)),
                _ => None,
            })
        };
        let auctions = || {
            events.iter().filter_map(|(n, e)| match e {
                Event::Auction(a) => Some((*n, a)),
                _ => None,
            })
        };
        let bids = || {
            events.iter().filter_map(|(n, e)| match e {
                Event::Bid(b) => Some((*n, b)),
                _ => None,
            })
        };
        let time = |n: u64| self.time_ns(n);
        // The crate's expiry is in its rounded milliseconds; keep its
        // distance from the event's own time.
        let expires = |n: u64, a: &Auction| {
            time(n).saturating_add((a.expires as i64 - a.date_time as i64) * 1_000_000)
        };
        Ok(match (self.table, name) {
            (Table::Person, "id") => ints(people().map(|(_, p): (u64, &Person)| p.id as i64)),
            (Table::Person, "name") => texts(people().map(|(_, p)| p.name.as_str())),
            (Table::Person, "email_address") => {
                texts(people().map(|(_, p)| p.email_address.as_str()))
            }
            (Table::Person, "credit_card") => texts(people().map(|(_, p)| p.credit_card.as_str())),
            (Table::Person, "city") => texts(people().map(|(_, p)| p.city.as_str())),
            (Table::Person, "state") => texts(people().map(|(_, p)| p.state.as_str())),
            (Table::Person, "date_time") => times(people().map(|(n, _)| time(n))),
            (Table::Person, "extra") => texts(people().map(|(_, p)| p.extra.as_str())),
            (Table::Auction, "id") => ints(auctions().map(|(_, a)| a.id as i64)),
            (Table::Auction, "item_name") => texts(auctions().map(|(_, a)| a.item_name.as_str())),
            (Table::Auction, "description") => {
                texts(auctions().map(|(_, a)| a.description.as_str()))
            }
            (Table::Auction, "initial_bid") => ints(auctions().map(|(_, a)| a.initial_bid as i64)),
            (Table::Auction, "reserve") => ints(auctions().map(|(_, a)| a.reserve as i64)),
            (Table::Auction, "date_time") => times(auctions().map(|(n, _)| time(n))),
            (Table::Auction, "expires") => times(auctions().map(|(n, a)| expires(n, a))),
            (Table::Auction, "seller") => ints(auctions().map(|(_, a)| a.seller as i64)),
            (Table::Auction, "category") => ints(auctions().map(|(_, a)| a.category as i64)),
            (Table::Auction, "extra") => texts(auctions().map(|(_, a)| a.extra.as_str())),
            (Table::Bid, "auction") => ints(bids().map(|(_, b): (u64, &Bid)| b.auction as i64)),
            (Table::Bid, "bidder") => ints(bids().map(|(_, b)| b.bidder as i64)),
            (Table::Bid, "price") => ints(bids().map(|(_, b)| b.price as i64)),
            (Table::Bid, "channel") => texts(bids().map(|(_, b)| b.channel.as_str())),
            (Table::Bid, "url") => texts(bids().map(|(_, b)| b.url.as_str())),
            (Table::Bid, "date_time") => times(bids().map(|(n, _)| time(n))),
            (Table::Bid, "extra") => texts(bids().map(|(_, b)| b.extra.as_str())),
            (table, other) => {
                return Err(crate::internal!(
                    "nexmark {} has no column {other}",
                    table.name()
                ));
            }
        })
    }
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values))
}

fn texts<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut b = StringViewBuilder::with_capacity(values.size_hint().0);
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};

    fn configure(declared: Vec<Field>, options: &[(&str, &str)]) -> Result<NexmarkConnector> {
        let map = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = Options::new("nexmark", map);
        let c = NexmarkConnector::configure(&mut options, &Arc::new(Schema::new(declared)))?;
        options.finish()?;
        Ok(c)
    }

    /// All events `0..n` of `table` as one batch of its default columns.
    fn generate(table: Table, n: u64) -> RecordBatch {
        let c = configure(vec![], &[("nexmark.table.type", table.name())]).unwrap();
        let rows = Rows {
            table,
            schema: c.default_columns().unwrap(),
            base_ns: 1_000_000_000,
            gap_ns: 1000,
        };
        let mut generator =
            EventGenerator::new(crate_config(1000, 1000, 0)).with_type_filter(table.event_type());
        let mut events = Vec::new();
        while generator.global_offset() < n {
            let number = generator.global_offset();
            events.extend(generator.next().map(|e| (number, e)));
        }
        rows.batch(&events).unwrap()
    }

    #[test]
    fn each_table_keeps_its_share_of_the_event_stream() {
        // In every 50 events: 1 person, 3 auctions, 46 bids.
        assert_eq!(generate(Table::Person, 1000).num_rows(), 20);
        assert_eq!(generate(Table::Auction, 1000).num_rows(), 60);
        assert_eq!(generate(Table::Bid, 1000).num_rows(), 920);
        assert_eq!(generate(Table::Bid, 3).num_rows(), 0);
    }

    #[test]
    fn event_time_is_exact_and_matches_the_unfiltered_stream() {
        let bids = generate(Table::Bid, 100);
        let times = bids.column(5).as_primitive::<TimestampNanosecondType>();
        // Bid events are numbers 4..50 and 54..100.
        assert_eq!(times.value(0), 1_000_000_000 + 4 * 1000);
        assert_eq!(times.value(46), 1_000_000_000 + 54 * 1000);
        let all: Vec<Event> = EventGenerator::new(crate_config(1000, 1000, 0))
            .take(100)
            .collect();
        let Event::Bid(first) = &all[4] else {
            panic!("event 4 is not a bid: {:?}", all[4]);
        };
        let auctions = bids.column(0).as_primitive::<Int64Type>();
        assert_eq!(auctions.value(0), first.auction as i64);
    }

    #[test]
    fn columns_are_typed_as_documented() {
        let c = configure(vec![], &[("nexmark.table.type", "Auction")]).unwrap();
        let schema = c.default_columns().unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, AUCTION.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        assert_eq!(
            schema.field_with_name("date_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
        let auctions = generate(Table::Auction, 200);
        let date = auctions.column(5).as_primitive::<TimestampNanosecondType>();
        let expires = auctions.column(6).as_primitive::<TimestampNanosecondType>();
        assert!((0..auctions.num_rows()).all(|i| expires.value(i) > date.value(i)));
        assert_eq!(auctions.column(1).null_count(), 0);
    }

    #[test]
    fn bad_options_and_columns_are_refused() {
        let err = |declared: Vec<Field>, options: &[(&str, &str)]| {
            configure(declared, options).unwrap_err()
        };
        let e = err(vec![], &[]);
        assert!(e.to_string().contains("nexmark.table.type"), "{e}");
        let e = err(vec![], &[("nexmark.table.type", "bids")]);
        assert_eq!(e.sqlstate(), "22023");
        let e = err(
            vec![],
            &[("nexmark.table.type", "bid"), ("nexmark.seed", "x")],
        );
        assert_eq!(e.sqlstate(), "22023");
        let e = err(
            vec![],
            &[("nexmark.table.type", "bid"), ("nexmark.event.num", "-1")],
        );
        assert_eq!(e.sqlstate(), "22023");
        let bid = [("nexmark.table.type", "bid")];
        let e = err(vec![Field::new("bidder_id", DataType::Int64, true)], &bid);
        assert_eq!(e.sqlstate(), "42703");
        assert!(e.to_string().contains("auction, bidder, price"), "{e}");
        let e = err(vec![Field::new("price", DataType::Utf8, true)], &bid);
        assert_eq!(e.sqlstate(), "42804");
        let ok = configure(
            vec![
                Field::new("price", DataType::Int32, true),
                Field::new("auction", DataType::Int64, true),
            ],
            &bid,
        );
        assert!(ok.is_ok());
    }
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    #[test]
    fn a_seed_gives_other_values_reproducibly_with_the_same_mix_and_times() {
        let events = |seed| -> Vec<(String, u64)> {
            EventGenerator::new(crate_config(1000, 1000, seed))
                .take(200)
                .map(|e| match e {
                    Event::Bid(b) => (format!("bid {} {}", b.price, b.bidder), b.date_time),
                    Event::Auction(a) => (format!("auction {}", a.item_name), a.date_time),
                    Event::Person(p) => (format!("person {}", p.name), p.date_time),
                })
                .collect()
        };
        let (a, b, c) = (events(0), events(0), events(3));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let kind = |v: &[(String, u64)]| -> Vec<String> {
            v.iter()
                .map(|(s, t)| format!("{} {t}", s.split(' ').next().unwrap_or("")))
                .collect()
        };
        assert_eq!(kind(&a), kind(&c));
    }
}

#[cfg(test)]
mod resume_tests {
    use crate::connectors::testing::{all_rows, assert_same_rows, run_with_checkpoint, source};

    #[tokio::test]
    async fn a_resumed_reader_makes_the_events_that_follow() {
        for table in ["bid", "auction", "person"] {
            // Event time from the wall clock, far ahead of it (1 s per
            // event): the resumed base stays the recorded one.
            let source = source(&format!(
                "CREATE SOURCE n WITH (connector = 'nexmark', nexmark.table.type = '{table}', \
                 nexmark.event.num = '20000', nexmark.min.event.gap.in.ns = '1000000000', \
                 nexmark.max.chunk.size = '100')"
            ))
            .await;
            // Not before the first row: the base would be a new reader's.
            for after in [1, 3] {
                let (before, rest, positions) = run_with_checkpoint(&source, after).await;
                let split = format!("nexmark-{table}");
                assert!(
                    positions[&split].starts_with(&format!("rows={};", before.len())),
                    "{positions:?}"
                );
                let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
                let what = format!("{table} after {after}");
                assert_same_rows(&all_rows(&mut resumed).await, &rest, &what);
            }
        }
    }
}
