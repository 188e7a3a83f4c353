//! Datagen's generation: one reader's [`Generator`] turns the column rules
//! into Arrow arrays a batch at a time, with one seeded RNG per column (so a
//! column's values do not change when another column is added).
//!
//! Pure logic: no I/O and no clock (the reader passes the time in). Values
//! are made in bulk in their domain (`i64` or `f64`) and converted to the
//! column's type once per batch; strings go straight into one builder.
//!
//! The streams are ChaCha12 (rand's `StdRng`, seeded the same way), whose
//! position can be read and set: [`Generator::streams`] and
//! [`Generator::seek`] let a resumed reader go on with exactly the values
//! an uninterrupted one would draw. What a row draws never depends on how
//! rows are cut into batches.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, PrimitiveArray, StringBuilder,
    UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Int8Type, Int16Type, Int32Type,
    SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::Distribution;

use super::rules::{Class, ColumnSpec, Rule};
use crate::error::Result;

const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// splitmix64: spreads a seed so that nearby seeds give unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a hash of a column name that stays the same across builds.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One reader's generator: a state per column.
pub(super) struct Generator {
    schema: SchemaRef,
    columns: Vec<ColumnState>,
}

struct ColumnState {
    rule: Rule,
    data_type: DataType,
    /// Zero for a column that must not be NULL.
    null_rate: f64,
    values: ChaCha12Rng,
    nulls: ChaCha12Rng,
}

impl Generator {
    /// `schema` is the source's; `event_column` its WATERMARK column;
    /// `start_ns` the reader's start on the wall clock.
    pub fn new(
        specs: &[ColumnSpec],
        schema: SchemaRef,
        event_column: Option<&str>,
        seed: u64,
        start_ns: i64,
        default_step_ns: i64,
    ) -> Result<Self> {
        if specs.len() != schema.fields().len() {
            return Err(crate::internal!(
                "datagen has {} column rules for {} columns",
                specs.len(),
                schema.fields().len()
            ));
        }
        let columns = specs
            .iter()
            .zip(schema.fields())
            .map(|(spec, field)| {
                let rule = match &spec.rule {
                    Rule::DefaultTime if event_column == Some(spec.name.as_str()) => {
                        Rule::EventTime {
                            start_ns: Some(start_ns),
                            step_ns: Some(default_step_ns),
                            disorder_ns: 0,
                        }
                    }
                    Rule::DefaultTime => Rule::Now,
                    Rule::EventTime {
                        start_ns: s,
                        step_ns: st,
                        disorder_ns,
                    } => Rule::EventTime {
                        start_ns: Some(s.unwrap_or(start_ns)),
                        step_ns: Some(st.unwrap_or(default_step_ns)),
                        disorder_ns: *disorder_ns,
                    },
                    other => other.clone(),
                };
                let column_seed = spec
                    .seed
                    .unwrap_or_else(|| mix(seed ^ name_hash(&spec.name)));
                ColumnState {
                    rule,
                    data_type: field.data_type().clone(),
                    null_rate: if field.is_nullable() {
                        spec.null_rate
                    } else {
                        0.0
                    },
                    values: ChaCha12Rng::seed_from_u64(column_seed),
                    nulls: ChaCha12Rng::seed_from_u64(mix(column_seed ^ 0x6e75_6c6c)),
                }
            })
            .collect();
        Ok(Generator { schema, columns })
    }

    /// Where each column's value and NULL streams are, in words.
    pub fn streams(&self) -> Vec<(u128, u128)> {
        self.columns
            .iter()
            .map(|c| (c.values.get_word_pos(), c.nulls.get_word_pos()))
            .collect()
    }

    /// Moves the streams to positions `streams` returned.
    pub fn seek(&mut self, streams: &[(u128, u128)]) -> Result<()> {
        if streams.len() != self.columns.len() {
            return Err(crate::internal!(
                "datagen has {} columns but a position for {}",
                self.columns.len(),
                streams.len()
            ));
        }
        for (c, (values, nulls)) in self.columns.iter_mut().zip(streams) {
            c.values.set_word_pos(*values);
            c.nulls.set_word_pos(*nulls);
        }
        Ok(())
    }

    /// Rows `first..first + n`; `now_ns` is the wall clock.
    pub fn batch(&mut self, first: u64, n: usize, now_ns: i64) -> Result<RecordBatch> {
        let columns = self
            .columns
            .iter_mut()
            .map(|c| c.generate(first, n, now_ns))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl ColumnState {
    fn generate(&mut self, first: u64, n: usize, now_ns: i64) -> Result<ArrayRef> {
        let nulls = (self.null_rate > 0.0).then(|| {
            let (rng, p) = (&mut self.nulls, self.null_rate);
            NullBuffer::new(BooleanBuffer::collect_bool(n, |_| !rng.random_bool(p)))
        });
        let rng = &mut self.values;
        let dt = &self.data_type;
        let row = |i: usize| first + i as u64;
        match &self.rule {
            Rule::IntSequence { start, .. } => {
                let v = (0..n).map(|i| start.wrapping_add(row(i) as i64)).collect();
                int_array(v, nulls, dt)
            }
            Rule::IntUniform { min, max } => {
                let v = (0..n).map(|_| rng.random_range(*min..=*max)).collect();
                int_array(v, nulls, dt)
            }
            Rule::FloatSequence { start, .. } => {
                let v = (0..n).map(|i| start + row(i) as f64).collect();
                float_array(v, nulls, dt)
            }
            Rule::FloatUniform { min, max } => {
                let v = (0..n).map(|_| rng.random_range(*min..=*max)).collect();
                float_array(v, nulls, dt)
            }
            Rule::Normal {
                dist,
                min,
                max,
                round,
            } => {
                let mut sample = || dist.sample(rng).clamp(*min, *max);
                if *round {
                    let v = (0..n).map(|_| sample().round() as i64).collect();
                    int_array(v, nulls, dt)
                } else {
                    float_array((0..n).map(|_| sample()).collect(), nulls, dt)
                }
            }
            Rule::Choice(values) => {
                let len = values.len() as u32;
                let picks = (0..n).map(|_| rng.random_range(0..len)).collect();
                Ok(take(values, &UInt32Array::new(picks, nulls), None)?)
            }
            Rule::Text { length } => {
                let mut b = StringBuilder::with_capacity(n, n * length);
                let mut text = vec![0u8; *length];
                for i in 0..n {
                    if nulls.as_ref().is_some_and(|m| m.is_null(i)) {
                        b.append_null();
                        continue;
                    }
                    for c in text.iter_mut() {
                        *c = ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())];
                    }
                    // Only ASCII letters and digits were written.
                    b.append_value(std::str::from_utf8(&text).unwrap_or_default());
                }
                let array: ArrayRef = Arc::new(b.finish());
                Ok(if dt == &DataType::Utf8 {
                    array
                } else {
                    cast(&array, dt)?
                })
            }
            Rule::Bool => {
                let values = BooleanBuffer::collect_bool(n, |_| rng.random_bool(0.5));
                Ok(Arc::new(BooleanArray::new(values, nulls)))
            }
            Rule::EventTime {
                start_ns,
                step_ns,
                disorder_ns,
            } => {
                let (start, step, disorder) = (
                    start_ns.unwrap_or(now_ns) as i128,
                    step_ns.unwrap_or(0) as i128,
                    *disorder_ns,
                );
                let unit = unit_ns(dt) as i128;
                let v = (0..n)
                    .map(|i| {
                        let back = if disorder > 0 {
                            rng.random_range(0..=disorder)
                        } else {
                            0
                        };
                        let t = start + row(i) as i128 * step - back as i128;
                        t.clamp(i64::MIN as i128, i64::MAX as i128).div_euclid(unit) as i64
                    })
                    .collect();
                int_array(v, nulls, dt)
            }
            Rule::Now => int_array(vec![now_ns.div_euclid(unit_ns(dt)); n], nulls, dt),
            Rule::DefaultTime => Err(crate::internal!("datagen time rule was not settled")),
        }
    }
}

/// Nanoseconds per value of a date or timestamp type.
fn unit_ns(data_type: &DataType) -> i64 {
    match Class::of(data_type) {
        Some(Class::Time { unit_ns } | Class::Date { unit_ns }) => unit_ns,
        _ => 1,
    }
}

/// `i64` values as an integer, date or timestamp column (in range by
/// construction: the rules were checked against the type).
fn int_array(values: Vec<i64>, nulls: Option<NullBuffer>, dt: &DataType) -> Result<ArrayRef> {
    let a = Int64Array::new(values.into(), nulls);
    Ok(match dt {
        DataType::Int64 => Arc::new(a),
        DataType::Int8 => Arc::new(a.unary::<_, Int8Type>(|v| v as i8)),
        DataType::Int16 => Arc::new(a.unary::<_, Int16Type>(|v| v as i16)),
        DataType::Int32 => Arc::new(a.unary::<_, Int32Type>(|v| v as i32)),
        DataType::UInt8 => Arc::new(a.unary::<_, UInt8Type>(|v| v as u8)),
        DataType::UInt16 => Arc::new(a.unary::<_, UInt16Type>(|v| v as u16)),
        DataType::UInt32 => Arc::new(a.unary::<_, UInt32Type>(|v| v as u32)),
        DataType::UInt64 => Arc::new(a.unary::<_, UInt64Type>(|v| v as u64)),
        DataType::Date32 => Arc::new(a.unary::<_, Date32Type>(|v| v as i32)),
        DataType::Date64 => Arc::new(a.reinterpret_cast::<Date64Type>()),
        DataType::Timestamp(unit, tz) => {
            let tz = tz.clone();
            match unit {
                TimeUnit::Second => Arc::new(
                    a.reinterpret_cast::<TimestampSecondType>()
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Millisecond => Arc::new(
                    a.reinterpret_cast::<TimestampMillisecondType>()
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Microsecond => Arc::new(
                    a.reinterpret_cast::<TimestampMicrosecondType>()
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    a.reinterpret_cast::<TimestampNanosecondType>()
                        .with_timezone_opt(tz),
                ),
            }
        }
        other => return Err(crate::internal!("datagen made integers for {other}")),
    })
}

/// `f64` values as a floating-point or decimal column.
fn float_array(values: Vec<f64>, nulls: Option<NullBuffer>, dt: &DataType) -> Result<ArrayRef> {
    let a = Float64Array::new(values.into(), nulls);
    Ok(match dt {
        DataType::Float64 => Arc::new(a),
        DataType::Float32 => Arc::new(a.unary::<_, Float32Type>(|v| v as f32)),
        DataType::Decimal128(precision, scale) => {
            let factor = 10f64.powi(*scale as i32);
            let bound = 10i128.pow(*precision as u32) - 1;
            let d: PrimitiveArray<Decimal128Type> =
                a.unary(|v| ((v * factor).round() as i128).clamp(-bound, bound));
            Arc::new(d.with_precision_and_scale(*precision, *scale)?)
        }
        other => return Err(crate::internal!("datagen made numbers for {other}")),
    })
}
