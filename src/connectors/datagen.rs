//! The `datagen` connector: rows made up from per-column rules, for demos,
//! tests and benchmarks that need no outside system.
//!
//! Option names follow RisingWave (`datagen.rows.per.second`,
//! `fields.<column>.kind`, `.start`/`.end`, `.min`/`.max`, `.length`,
//! `.seed`), with Flink's aliases and a few additions (a whole-source seed,
//! a row total, normal distributions, choices from a list, NULL rates, and
//! event time that advances with the row number). The rules live in
//! `datagen/rules.rs` and the columnar generation in `datagen/generate.rs`;
//! this file owns the source options and the reader loop, and must not
//! decode or compute watermarks (the runtime does that from the batches).
//!
//! Each reader runs its own generator from the seed, so two readers of a
//! seeded source see the same rows, except for time that starts from the
//! wall clock (event time without `start`, and `now` columns). The rate is
//! kept per tick of wall-clock time: whatever rows are due are made as one
//! columnar batch, never a sleep per row.
//!
//! Resuming. The one split's position is the rows made so far with what
//! makes the next ones (`rows=..;seed=..;start_ns=..;streams=..`: the seed,
//! drawn or given; the wall-clock start of event time; each column's
//! random-stream positions). A resumed reader makes exactly the rows an
//! uninterrupted one would have made from there, with one exception: event
//! time that follows the wall clock jumps forward over the time the source
//! was down (never back), and `now` columns read the clock. A throttled
//! reader goes on at its rate from the moment it resumes.

mod generate;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use rand::Rng;
use tokio::time::MissedTickBehavior;

use self::generate::Generator;
use self::rules::{ColumnSpec, PROPERTIES};
use super::options::{Options, invalid};
use super::position::{ParsedPosition, PositionText};
use super::runtime::{ReaderContext, ReadySignal, SplitWriter};
use super::{Connector, SourceSpec};
use crate::error::{Error, Result};

/// Rows per batch at most: big enough to amortize the per-batch work,
/// small enough to keep batches cache-friendly.
const MAX_BATCH: u64 = 8192;
/// How often a rate-limited reader makes the rows that are due; at low
/// rates this is the latency of a row.
const TICK: Duration = Duration::from_millis(10);
/// Rows per second when `datagen.rows.per.second` is not given.
const DEFAULT_RATE: u64 = 1000;
/// Event-time step per row when rows come as fast as possible.
const UNLIMITED_STEP_NS: i64 = 1_000_000;
/// The one split of a reader.
const SPLIT: &str = "datagen";

#[derive(Debug, Clone)]
pub struct DatagenConnector {
    /// Rows per second per reader; `None` makes rows as fast as they are
    /// taken.
    rate: Option<u64>,
    /// Rows per reader: `datagen.rows.total` or where a sequence ends.
    limit: Option<u64>,
    /// True when the user bounded the source (a total or a sequence end),
    /// so that queries over it are planned as bounded.
    finite: bool,
    /// The whole-source seed; without it each reader draws one.
    seed: Option<u64>,
    columns: Vec<ColumnSpec>,
}

impl DatagenConnector {
    pub fn configure(options: &mut Options, declared: &SchemaRef) -> Result<Self> {
        if declared.fields().is_empty() {
            return Err(Error::Plan {
                sqlstate: "42601",
                message: "a datagen source needs a column list, e.g. CREATE SOURCE s (id INT, \
                          ts TIMESTAMP) WITH (connector = 'datagen')"
                    .into(),
            });
        }
        let rate = match options.take("datagen.rows.per.second", &["rows-per-second"]) {
            None => Some(DEFAULT_RATE),
            Some(v) => parse_rate(&v)?,
        };
        let total = options
            .int("datagen.rows.total", &["number-of-rows"], 0, i64::MAX)?
            .map(|n| n as u64);
        let seed = options
            .int("datagen.seed", &[], i64::MIN, i64::MAX)?
            .map(|s| s as u64);

        let mut per_column: Vec<BTreeMap<String, String>> =
            vec![BTreeMap::new(); declared.fields().len()];
        for (key, value) in options.take_prefixed("fields.") {
            let rest = &key["fields.".len()..];
            let Some((column, property)) = rest.rsplit_once('.') else {
                return Err(invalid(format!(
                    "option \"{key}\" should be fields.<column>.<property>, e.g. fields.id.kind"
                )));
            };
            let names = || declared.fields().iter().map(|f| f.name().as_str());
            let Some(index) = names()
                .position(|n| n == column)
                .or_else(|| names().position(|n| n.eq_ignore_ascii_case(column)))
            else {
                return Err(invalid(format!(
                    "option \"{key}\": the source has no column \"{column}\"; its columns are {}",
                    names().collect::<Vec<_>>().join(", ")
                )));
            };
            if !PROPERTIES.contains(&property) {
                return Err(invalid(format!(
                    "option \"{key}\": unknown property \"{property}\"; the properties of a \
                     datagen field are {}",
                    PROPERTIES.join(", ")
                )));
            }
            per_column[index].insert(property.to_string(), value);
        }
        let columns = declared
            .fields()
            .iter()
            .zip(per_column)
            .map(|(field, props)| ColumnSpec::try_new(field, props))
            .collect::<Result<Vec<_>>>()?;

        let mut limit = total;
        let mut finite = total.is_some();
        for column in &columns {
            if let Some((rows, bounded)) = column.row_limit() {
                limit = Some(limit.map_or(rows, |l| l.min(rows)));
                finite |= bounded;
            }
        }
        Ok(DatagenConnector {
            rate,
            limit,
            finite,
            seed,
            columns,
        })
    }

    /// Event time advances by this per row unless a column says otherwise:
    /// in step with the rate, so event time keeps up with the wall clock.
    fn default_step_ns(&self) -> i64 {
        match self.rate {
            Some(r) => (1_000_000_000 / r.max(1)) as i64,
            None => UNLIMITED_STEP_NS,
        }
    }
}

/// `'1000'`, or `'0'` / `'unlimited'` for as fast as possible.
fn parse_rate(v: &str) -> Result<Option<u64>> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    match t.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(n) if n <= i64::MAX as u64 => Ok(Some(n)),
        _ => Err(invalid(format!(
            "option datagen.rows.per.second must be a whole number of rows, or 0 or \
             'unlimited' for as fast as possible, not '{v}'"
        ))),
    }
}

/// Nanoseconds since the epoch.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

#[async_trait]
impl Connector for DatagenConnector {
    fn generates_rows(&self) -> bool {
        true
    }

    fn is_finite(&self) -> bool {
        self.finite
    }

    async fn check(&self, spec: &SourceSpec) -> Result<()> {
        for (column, field) in self.columns.iter().zip(spec.schema.fields()) {
            if column.null_rate > 0.0 && !field.is_nullable() {
                return Err(invalid(format!(
                    "fields.{}.null_rate: column \"{}\" is the event-time (WATERMARK) column \
                     and cannot be NULL",
                    column.name, column.name
                )));
            }
        }
        Ok(())
    }

    fn start(&self, ctx: &mut ReaderContext) -> Result<()> {
        let event_column = ctx.spec.event_time.as_ref().map(|e| e.column.as_str());
        let resumed = match ctx.resume.get(SPLIT) {
            Some(text) => Some(Resumed::parse(text)?),
            None => None,
        };
        let now = now_ns();
        let step = self.default_step_ns();
        let origin = match &resumed {
            Some(r) => Origin {
                seed: r.seed,
                // Event time on the wall clock goes on from where it was,
                // or from now if the source was down meanwhile.
                start_ns: r.start_ns.saturating_add(
                    now.saturating_sub(
                        r.start_ns
                            .saturating_add(step.saturating_mul(r.rows as i64)),
                    )
                    .max(0),
                ),
            },
            None => Origin {
                seed: self.seed.unwrap_or_else(|| rand::rng().random()),
                start_ns: now,
            },
        };
        let mut generator = Generator::new(
            &self.columns,
            ctx.spec.schema.clone(),
            event_column,
            origin.seed,
            origin.start_ns,
            step,
        )?;
        if let Some(r) = &resumed {
            generator.seek(&r.streams)?;
        }
        let first = resumed.map_or(0, |r| r.rows);
        let writer = ctx.split(SPLIT);
        let ready = ctx.ready_signal();
        let (rate, limit) = (self.rate, self.limit);
        ctx.spawn(run(generator, origin, first, writer, rate, limit, ready));
        Ok(())
    }
}

/// What a reader's rows follow from besides the options: recorded so that
/// a resumed reader follows the same.
#[derive(Debug, Clone, Copy)]
struct Origin {
    seed: u64,
    /// Wall-clock start of event time without a `start`.
    start_ns: i64,
}

impl Origin {
    /// The split's position after `rows` rows.
    fn position(&self, rows: u64, generator: &Generator) -> String {
        let streams: Vec<String> = generator
            .streams()
            .iter()
            .map(|(values, nulls)| format!("{values}.{nulls}"))
            .collect();
        PositionText::new()
            .with("rows", rows)
            .with("seed", self.seed)
            .with("start_ns", self.start_ns)
            .with("streams", streams.join(","))
            .finish()
    }
}

/// A recorded position, read back.
#[derive(Debug)]
struct Resumed {
    rows: u64,
    seed: u64,
    start_ns: i64,
    streams: Vec<(u128, u128)>,
}

impl Resumed {
    fn parse(text: &str) -> Result<Self> {
        let p = ParsedPosition::parse(SPLIT, text)?;
        let streams = p
            .raw("streams")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (v, n) = s.split_once('.')?;
                Some((v.parse().ok()?, n.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| p.error("the stream positions are not readable"))?;
        Ok(Resumed {
            rows: p.get("rows")?,
            seed: p.get("seed")?,
            start_ns: p.get("start_ns")?,
            streams,
        })
    }
}

/// The reader loop: rows that are due, as batches, from row `first` until
/// the limit.
async fn run(
    mut generator: Generator,
    origin: Origin,
    first: u64,
    mut writer: SplitWriter,
    rate: Option<u64>,
    limit: Option<u64>,
    ready: ReadySignal,
) -> Result<()> {
    writer.announce().await?;
    writer.resume_at(origin.position(first, &generator));
    writer.tell_position().await?;
    ready.send().await?;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut made = first;
    while limit.is_none_or(|l| made < l) {
        let due = match rate {
            None => made + MAX_BATCH,
            Some(r) => {
                ticks.tick().await;
                first + (started.elapsed().as_secs_f64() * r as f64) as u64
            }
        };
        let due = limit.map_or(due, |l| due.min(l));
        while made < due {
            let n = (due - made).min(MAX_BATCH);
            let batch = generator.batch(made, n as usize, now_ns())?;
            made += n;
            writer.resume_at(origin.position(made, &generator));
            writer.batch(batch, made).await?;
        }
        writer
            .generated_due(rate.is_some(), limit.is_some())
            .await?;
    }
    writer.finish().await
}
