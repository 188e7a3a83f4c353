//! The rules of datagen's columns: what `fields.<column>.*` options ask
//! for, checked against each column's type once, at CREATE. A [`Rule`] says
//! how values are made; `generate.rs` makes them.
//!
//! Values live in one of two domains: `i64` (integers, and dates and
//! timestamps in the column's unit) or `f64` (floating point and decimal).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, TimeUnit};
use rand_distr::Normal;

use crate::connectors::options::{invalid, parse_duration};
use crate::error::{Error, Result};

/// The properties a `fields.<column>.` option may name.
pub(super) const PROPERTIES: &[&str] = &[
    "kind",
    "start",
    "end",
    "min",
    "max",
    "length",
    "seed",
    "distribution",
    "mean",
    "stddev",
    "values",
    "null_rate",
    "step",
    "max_disorder",
];

/// Length of a random string unless `length` says otherwise.
const DEFAULT_STRING_LENGTH: i64 = 8;
/// Uniform floating-point and decimal values fall in `0..=this` by default.
const DEFAULT_FLOAT_MAX: f64 = 1000.0;
pub(super) const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// The column types datagen knows, by how their values are made.
#[derive(Debug, Clone, Copy)]
pub(super) enum Class {
    Int {
        lo: i64,
        hi: i64,
    },
    Float {
        lo: f64,
        hi: f64,
    },
    Bool,
    Text,
    /// A timestamp; values are ticks of `unit_ns` nanoseconds.
    Time {
        unit_ns: i64,
    },
    /// A date; values are days (Date32) or milliseconds (Date64).
    Date {
        unit_ns: i64,
    },
}

impl Class {
    pub(super) fn of(data_type: &DataType) -> Option<Class> {
        let int = |lo: i64, hi: i64| Some(Class::Int { lo, hi });
        match data_type {
            DataType::Int8 => int(i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => int(i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => int(i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => int(i64::MIN, i64::MAX),
            DataType::UInt8 => int(0, u8::MAX.into()),
            DataType::UInt16 => int(0, u16::MAX.into()),
            DataType::UInt32 => int(0, u32::MAX.into()),
            DataType::UInt64 => int(0, i64::MAX),
            DataType::Float32 => Some(Class::Float {
                lo: f32::MIN.into(),
                hi: f32::MAX.into(),
            }),
            DataType::Float64 => Some(Class::Float {
                lo: f64::MIN,
                hi: f64::MAX,
            }),
            DataType::Decimal128(precision, scale) => {
                let hi = (10f64.powi(*precision as i32) - 1.0) / 10f64.powi(*scale as i32);
                Some(Class::Float { lo: -hi, hi })
            }
            DataType::Boolean => Some(Class::Bool),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Class::Text),
            DataType::Timestamp(unit, _) => Some(Class::Time {
                unit_ns: match unit {
                    TimeUnit::Second => 1_000_000_000,
                    TimeUnit::Millisecond => 1_000_000,
                    TimeUnit::Microsecond => 1_000,
                    TimeUnit::Nanosecond => 1,
                },
            }),
            DataType::Date32 => Some(Class::Date {
                unit_ns: NANOS_PER_DAY,
            }),
            DataType::Date64 => Some(Class::Date { unit_ns: 1_000_000 }),
            _ => None,
        }
    }
}

/// What a column's values follow.
#[derive(Debug, Clone)]
pub(super) enum Rule {
    /// start, start + 1, ... up to `end`, after which the source ends.
    IntSequence {
        start: i64,
        end: i64,
        bounded: bool,
    },
    FloatSequence {
        start: f64,
        end: Option<f64>,
    },
    IntUniform {
        min: i64,
        max: i64,
    },
    FloatUniform {
        min: f64,
        max: f64,
    },
    /// Normal values clamped to `min..=max`; rounded for integer columns.
    Normal {
        dist: Normal<f64>,
        min: f64,
        max: f64,
        round: bool,
    },
    /// One of these values (already of the column's type).
    Choice(ArrayRef),
    Text {
        length: usize,
    },
    Bool,
    /// `start + row * step`, moved back by up to `disorder_ns`; `None`
    /// means the reader's start time / the step that matches the rate.
    EventTime {
        start_ns: Option<i64>,
        step_ns: Option<i64>,
        disorder_ns: i64,
    },
    /// A timestamp without rules: event time when it is the WATERMARK
    /// column, else the wall clock. Settled when a reader starts.
    DefaultTime,
    /// The wall clock when the batch is made.
    Now,
}

/// One column's rules, checked against its type.
#[derive(Debug, Clone)]
pub(super) struct ColumnSpec {
    pub name: String,
    pub rule: Rule,
    pub null_rate: f64,
    /// `fields.<column>.seed`; without it the seed derives from the
    /// source's seed and the column name.
    pub seed: Option<u64>,
}

impl ColumnSpec {
    pub fn try_new(field: &Field, props: BTreeMap<String, String>) -> Result<Self> {
        let class = Class::of(field.data_type()).ok_or_else(|| {
            Error::Unsupported(format!(
                "datagen cannot make values for column \"{}\" of type {}; it makes integers, \
                 floating point, decimal, boolean, text, timestamp and date columns",
                field.name(),
                field.data_type()
            ))
        })?;
        let mut p = Props { field, props };
        let null_rate = p.float("null_rate")?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&null_rate) {
            return Err(invalid(format!(
                "{} must be from 0 to 1, not {null_rate}",
                p.key("null_rate")
            )));
        }
        let seed =
            match p.take("seed") {
                None => None,
                Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
                    invalid(format!("{} must be an integer, not '{v}'", p.key("seed")))
                })? as u64),
            };
        let explicit = p.take("kind").map(|k| k.trim().to_ascii_lowercase());
        let kind = match &explicit {
            Some(k) => k.as_str(),
            None if matches!(class, Class::Time { .. })
                && (p.has("start") || p.has("step") || p.has("max_disorder")) =>
            {
                "event_time"
            }
            None if p.has("start") || p.has("end") => "sequence",
            None => "random",
        };
        let rule = match kind {
            "sequence" => sequence(&mut p, class)?,
            "random" => random(&mut p, class, explicit.is_some())?,
            "event_time" => event_time(&mut p, class)?,
            other => {
                return Err(invalid(format!(
                    "{} must be 'sequence', 'random' or 'event_time', not '{other}'",
                    p.key("kind")
                )));
            }
        };
        if let Some(property) = p.props.keys().next() {
            return Err(invalid(format!(
                "{} does not apply to column \"{}\" ({}, kind '{kind}'{})",
                p.key(property),
                field.name(),
                field.data_type(),
                match &rule {
                    Rule::Choice(_) => ", values from a list",
                    Rule::Normal { .. } => ", normal distribution",
                    _ => "",
                }
            )));
        }
        Ok(ColumnSpec {
            name: field.name().clone(),
            rule,
            null_rate,
            seed,
        })
    }

    /// Rows until this column's sequence ends, and whether the end was
    /// asked for (rather than the type's maximum).
    pub fn row_limit(&self) -> Option<(u64, bool)> {
        match &self.rule {
            Rule::IntSequence {
                start,
                end,
                bounded,
            } => Some(((*end as i128 - *start as i128 + 1) as u64, *bounded)),
            Rule::FloatSequence {
                start,
                end: Some(end),
            } => Some(((end - start).floor() as u64 + 1, true)),
            _ => None,
        }
    }
}

fn sequence(p: &mut Props, class: Class) -> Result<Rule> {
    match class {
        Class::Int { hi, .. } => {
            let start = p.int_value("start")?.unwrap_or(0);
            let end = p.int_value("end")?;
            let rule = Rule::IntSequence {
                start,
                end: end.unwrap_or(hi),
                bounded: end.is_some(),
            };
            check_order(p, "start", start as f64, "end", end.map(|e| e as f64))?;
            Ok(rule)
        }
        Class::Float { .. } => {
            let start = p.float_value("start")?.unwrap_or(0.0);
            let end = p.float_value("end")?;
            check_order(p, "start", start, "end", end)?;
            Ok(Rule::FloatSequence { start, end })
        }
        _ => Err(invalid(format!(
            "{} = 'sequence' needs a numeric column; \"{}\" is {}",
            p.key("kind"),
            p.field.name(),
            p.field.data_type()
        ))),
    }
}

fn random(p: &mut Props, class: Class, explicit: bool) -> Result<Rule> {
    if let Some(values) = p.take("values") {
        return choice(p, &values);
    }
    match class {
        Class::Int { .. } | Class::Float { .. } => number(p, class),
        Class::Bool => Ok(Rule::Bool),
        Class::Text => {
            let length = match p.take("length") {
                None => DEFAULT_STRING_LENGTH,
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(n) if (0..=1_000_000).contains(&n) => n,
                    _ => {
                        return Err(invalid(format!(
                            "{} must be an integer from 0 to 1000000, not '{v}'",
                            p.key("length")
                        )));
                    }
                },
            };
            Ok(Rule::Text {
                length: length as usize,
            })
        }
        Class::Time { .. } | Class::Date { .. } => {
            match (p.int_value("min")?, p.int_value("max")?) {
                (Some(min), Some(max)) => {
                    check_order(p, "min", min as f64, "max", Some(max as f64))?;
                    Ok(Rule::IntUniform { min, max })
                }
                (None, None) if !explicit => Ok(match class {
                    Class::Time { .. } => Rule::DefaultTime,
                    _ => Rule::Now,
                }),
                _ => Err(invalid(format!(
                    "random values for column \"{}\" need both {} and {}",
                    p.field.name(),
                    p.key("min"),
                    p.key("max")
                ))),
            }
        }
    }
}

/// Uniform or normal values for a numeric column.
fn number(p: &mut Props, class: Class) -> Result<Rule> {
    let distribution = p
        .take("distribution")
        .map(|d| d.trim().to_ascii_lowercase());
    let normal = match distribution.as_deref() {
        None | Some("uniform") => false,
        Some("normal") | Some("gaussian") => true,
        Some(other) => {
            return Err(invalid(format!(
                "{} must be 'uniform' or 'normal', not '{other}'",
                p.key("distribution")
            )));
        }
    };
    let (min, max, lo, hi) = match class {
        Class::Int { lo, hi } => {
            let (min, max) = (p.int_value("min")?, p.int_value("max")?);
            if !normal {
                let (min, max) = (min.unwrap_or(lo), max.unwrap_or(hi));
                check_order(p, "min", min as f64, "max", Some(max as f64))?;
                return Ok(Rule::IntUniform { min, max });
            }
            (
                min.map(|v| v as f64),
                max.map(|v| v as f64),
                lo as f64,
                hi as f64,
            )
        }
        Class::Float { lo, hi } => (p.float_value("min")?, p.float_value("max")?, lo, hi),
        _ => return Err(crate::internal!("numeric rule for a non-numeric column")),
    };
    if !normal {
        let min = min.unwrap_or(0.0_f64.max(lo));
        let max = max.unwrap_or(DEFAULT_FLOAT_MAX.min(hi));
        check_order(p, "min", min, "max", Some(max))?;
        if !(max - min).is_finite() {
            return Err(invalid(format!(
                "{} to {} is too wide a range for uniform values",
                p.key("min"),
                p.key("max")
            )));
        }
        return Ok(Rule::FloatUniform { min, max });
    }
    let mean = p.float("mean")?.unwrap_or(0.0);
    let stddev = p.float("stddev")?.unwrap_or(1.0);
    let dist = Normal::new(mean, stddev).map_err(|_| {
        invalid(format!(
            "{} must be zero or more, not {stddev}",
            p.key("stddev")
        ))
    })?;
    let (min, max) = (min.unwrap_or(lo), max.unwrap_or(hi));
    check_order(p, "min", min, "max", Some(max))?;
    Ok(Rule::Normal {
        dist,
        min,
        max,
        round: matches!(class, Class::Int { .. }),
    })
}

/// `values = 'a,b,c'`: each value parsed as the column's type.
fn choice(p: &mut Props, values: &str) -> Result<Rule> {
    let texts: Vec<&str> = values.split(',').map(str::trim).collect();
    if values.trim().is_empty() {
        return Err(invalid(format!(
            "{} needs at least one value",
            p.key("values")
        )));
    }
    let parsed = p.parse(&StringArray::from(texts), "values", values)?;
    Ok(Rule::Choice(parsed))
}

fn event_time(p: &mut Props, class: Class) -> Result<Rule> {
    let Class::Time { unit_ns } = class else {
        return Err(invalid(format!(
            "{} = 'event_time' needs a TIMESTAMP column; \"{}\" is {}",
            p.key("kind"),
            p.field.name(),
            p.field.data_type()
        )));
    };
    let start_ns = p.int_value("start")?.map(|t| t.saturating_mul(unit_ns));
    let nanos = |d: std::time::Duration| d.as_nanos().min(i64::MAX as u128) as i64;
    let step_ns = p.duration("step")?.map(nanos);
    let disorder_ns = p.duration("max_disorder")?.map(nanos).unwrap_or(0);
    Ok(Rule::EventTime {
        start_ns,
        step_ns,
        disorder_ns,
    })
}

fn check_order(p: &Props, low: &str, lo: f64, high: &str, hi: Option<f64>) -> Result<()> {
    match hi {
        Some(hi) if hi < lo => Err(invalid(format!(
            "{} ({hi}) is below {} ({lo})",
            p.key(high),
            p.key(low)
        ))),
        _ => Ok(()),
    }
}

/// A column's `fields.<column>.*` options, taken one by one; what is left
/// does not apply to the column.
struct Props<'a> {
    field: &'a Field,
    props: BTreeMap<String, String>,
}

impl Props<'_> {
    fn key(&self, property: &str) -> String {
        format!("fields.{}.{property}", self.field.name())
    }

    fn has(&self, property: &str) -> bool {
        self.props.contains_key(property)
    }

    fn take(&mut self, property: &str) -> Option<String> {
        self.props.remove(property)
    }

    fn float(&mut self, property: &str) -> Result<Option<f64>> {
        let Some(v) = self.take(property) else {
            return Ok(None);
        };
        match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(invalid(format!(
                "{} must be a number, not '{v}'",
                self.key(property)
            ))),
        }
    }

    fn duration(&mut self, property: &str) -> Result<Option<std::time::Duration>> {
        let Some(v) = self.take(property) else {
            return Ok(None);
        };
        parse_duration(&v).map(Some).ok_or_else(|| {
            invalid(format!(
                "{} must be a duration such as '500ms' or '1s', not '{v}'",
                self.key(property)
            ))
        })
    }

    /// A number within the column's floating-point or decimal type.
    fn float_value(&mut self, property: &str) -> Result<Option<f64>> {
        let Some(v) = self.take(property) else {
            return Ok(None);
        };
        let parsed = self.parse(&StringArray::from(vec![v.trim()]), property, &v)?;
        let as_f64 = cast(&parsed, &DataType::Float64)?;
        let n = as_f64.as_primitive::<Float64Type>().value(0);
        if !n.is_finite() {
            return Err(invalid(format!(
                "{} must be a finite number, not '{v}'",
                self.key(property)
            )));
        }
        Ok(Some(n))
    }

    /// A value of the column's integer, date or timestamp type, as `i64`
    /// (dates and timestamps in the column's unit).
    fn int_value(&mut self, property: &str) -> Result<Option<i64>> {
        let Some(v) = self.take(property) else {
            return Ok(None);
        };
        let parsed = self.parse(&StringArray::from(vec![v.trim()]), property, &v)?;
        let as_i64 = cast(&parsed, &DataType::Int64)?;
        Ok(Some(as_i64.as_primitive::<Int64Type>().value(0)))
    }

    /// Text parsed as the column's type, with a message naming the option.
    fn parse(&self, texts: &StringArray, property: &str, written: &str) -> Result<ArrayRef> {
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let data_type = self.field.data_type();
        cast_with_options(texts, data_type, &strict)
            .ok()
            .filter(|a| a.null_count() == 0)
            .ok_or_else(|| {
                invalid(format!(
                    "{} = '{written}' is not a valid {data_type} for column \"{}\"",
                    self.key(property),
                    self.field.name()
                ))
            })
    }
}
