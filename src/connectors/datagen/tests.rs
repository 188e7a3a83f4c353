//! Unit tests of datagen: the source options, what each column rule makes,
//! seeds, NULL rates, event time, and the errors for rules that do not fit
//! a column.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int32Array, StringViewArray,
    TimestampMillisecondArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, IntervalUnit, Schema, TimeUnit};

use super::generate::Generator;
use super::rules::{ColumnSpec, NANOS_PER_DAY};
use super::*;

const NOW: i64 = 1_700_000_000_000_000_000;

fn spec(field: &Field, props: &[(&str, &str)]) -> Result<ColumnSpec> {
    let props = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ColumnSpec::try_new(field, props)
}

/// `n` rows of one column made by `props`, from row `first`.
fn rows(field: Field, props: &[(&str, &str)], first: u64, n: usize) -> ArrayRef {
    let s = spec(&field, props).unwrap();
    let schema = Arc::new(Schema::new(vec![field]));
    let mut g = Generator::new(&[s], schema, Some("ts"), 7, NOW, 1_000_000).unwrap();
    g.batch(first, n, NOW).unwrap().column(0).clone()
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

fn err(field: Field, props: &[(&str, &str)]) -> String {
    let e = spec(&field, props).unwrap_err();
    assert_eq!(e.sqlstate(), "22023", "{e}");
    e.to_string()
}

#[test]
fn a_seed_makes_the_same_rows_and_columns_draw_apart() {
    let fields = vec![
        int("a"),
        int("b"),
        Field::new("s", DataType::Utf8View, true),
    ];
    let specs: Vec<ColumnSpec> = fields.iter().map(|f| spec(f, &[]).unwrap()).collect();
    let schema = Arc::new(Schema::new(fields));
    let make = |seed| {
        let mut g = Generator::new(&specs, schema.clone(), None, seed, NOW, 1).unwrap();
        let first = g.batch(0, 100, NOW).unwrap();
        (first, g.batch(100, 100, NOW).unwrap())
    };
    assert_eq!(make(1), make(1));
    assert_ne!(make(1).0, make(2).0);
    let (batch, _) = make(1);
    assert_ne!(batch.column(0), batch.column(1), "columns share a stream");
}

#[test]
fn sequences_count_from_start_across_batches() {
    let a = rows(int("id"), &[("kind", "sequence"), ("start", "10")], 5, 4);
    let a = a.as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(a.values().to_vec(), vec![15, 16, 17, 18]);
    let f = rows(
        Field::new("x", DataType::Float64, true),
        &[("start", "0.5"), ("end", "9")],
        0,
        3,
    );
    let f = f.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(f.values().to_vec(), vec![0.5, 1.5, 2.5]);
    let s = spec(&int("id"), &[("start", "1"), ("end", "10")]).unwrap();
    assert_eq!(s.row_limit(), Some((10, true)));
}

#[test]
fn uniform_values_stay_within_min_and_max() {
    let a = rows(int("v"), &[("min", "-3"), ("max", "3")], 0, 5000);
    let a = a.as_any().downcast_ref::<Int32Array>().unwrap();
    assert!(a.values().iter().all(|v| (-3..=3).contains(v)));
    assert!(a.values().contains(&-3) && a.values().contains(&3));
    let f = rows(
        Field::new("x", DataType::Float64, true),
        &[("min", "1.5"), ("max", "2")],
        0,
        5000,
    );
    let f = f.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(f.values().iter().all(|v| (1.5..=2.0).contains(v)));
    let d = rows(
        Field::new("d", DataType::Decimal128(5, 2), true),
        &[("min", "10"), ("max", "20.5")],
        0,
        1000,
    );
    let d = d.as_any().downcast_ref::<Decimal128Array>().unwrap();
    assert!(d.values().iter().all(|v| (1000..=2050).contains(v)));
}

#[test]
fn normal_values_center_on_the_mean() {
    let props = [("distribution", "normal"), ("mean", "20"), ("stddev", "5")];
    let a = rows(Field::new("t", DataType::Float64, true), &props, 0, 10_000);
    let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
    let mean = a.values().iter().sum::<f64>() / 10_000.0;
    let var = a.values().iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 10_000.0;
    assert!((mean - 20.0).abs() < 0.5, "mean {mean}");
    assert!((var.sqrt() - 5.0).abs() < 0.5, "stddev {}", var.sqrt());
    // Integer columns round, and min/max clamp.
    let props = [
        ("distribution", "normal"),
        ("mean", "0"),
        ("stddev", "100"),
        ("min", "-5"),
        ("max", "5"),
    ];
    let i = rows(int("i"), &props, 0, 1000);
    let i = i.as_any().downcast_ref::<Int32Array>().unwrap();
    assert!(i.values().iter().all(|v| (-5..=5).contains(v)));
}

#[test]
fn choices_come_from_the_list_in_the_column_type() {
    let a = rows(int("c"), &[("values", "1, 5,9")], 0, 1000);
    let a = a.as_any().downcast_ref::<Int32Array>().unwrap();
    assert!(a.values().iter().all(|v| [1, 5, 9].contains(v)));
    let s = rows(
        Field::new("s", DataType::Utf8View, true),
        &[("values", "red,green")],
        0,
        100,
    );
    let s = s.as_any().downcast_ref::<StringViewArray>().unwrap();
    assert!(s.iter().all(|v| matches!(v, Some("red" | "green"))));
    let t = rows(
        Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        &[("values", "2024-01-01 00:00:00")],
        0,
        3,
    );
    let t = t
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap();
    assert_eq!(t.value(0), 1_704_067_200_000);
}

#[test]
fn null_rate_makes_about_that_share_null() {
    let a = rows(int("n"), &[("null_rate", "0.3")], 0, 10_000);
    let share = a.null_count() as f64 / 10_000.0;
    assert!((share - 0.3).abs() < 0.03, "{share}");
    assert_eq!(rows(int("n"), &[], 0, 1000).null_count(), 0);
    // A column that must not be NULL (the WATERMARK column) gets none.
    let field = Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false);
    let s = spec(&field, &[("null_rate", "0.5")]).unwrap();
    let mut g = Generator::new(
        &[s],
        Arc::new(Schema::new(vec![field])),
        Some("ts"),
        1,
        NOW,
        1,
    )
    .unwrap();
    assert_eq!(g.batch(0, 100, NOW).unwrap().column(0).null_count(), 0);
}

#[test]
fn event_time_advances_with_the_row_within_the_disorder() {
    let field = Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    );
    let props = [
        ("start", "2024-01-01 00:00:00"),
        ("step", "10ms"),
        ("max_disorder", "500ms"),
    ];
    let a = rows(field.clone(), &props, 100, 1000);
    let a = a
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap();
    let start = 1_704_067_200_000;
    let mut moved = 0;
    for (i, t) in a.values().iter().enumerate() {
        let exact = start + (100 + i as i64) * 10;
        assert!((exact - 500..=exact).contains(t), "row {i}: {t} vs {exact}");
        moved += (*t != exact) as usize;
    }
    assert!(moved > 900, "only {moved} rows were disordered");
    // Without rules, the WATERMARK column is event time from the reader's
    // start, one step per row; another timestamp column is the wall clock.
    let ns = Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false);
    let a = rows(ns, &[], 2, 2);
    let a = a
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    assert_eq!(a.values().to_vec(), vec![NOW + 2_000_000, NOW + 3_000_000]);
    let other = Field::new(
        "seen",
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        true,
    );
    let a = rows(other, &[], 2, 2);
    let a = a
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    assert_eq!(a.values().to_vec(), vec![NOW, NOW]);
    let d = rows(Field::new("d", DataType::Date32, true), &[], 0, 1);
    assert_eq!(
        cast(&d, &DataType::Int64)
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        NOW / NANOS_PER_DAY
    );
}

#[test]
fn random_text_has_the_length_and_the_column_type() {
    let s = rows(
        Field::new("s", DataType::Utf8View, true),
        &[("length", "12")],
        0,
        50,
    );
    let s = s.as_any().downcast_ref::<StringViewArray>().unwrap();
    assert!(
        s.iter()
            .flatten()
            .all(|v| v.len() == 12 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
    );
    let b = rows(Field::new("b", DataType::Boolean, true), &[], 0, 200);
    let b = b.as_boolean();
    assert!(b.true_count() > 50 && b.false_count() > 50);
}

#[test]
fn rules_that_do_not_fit_the_column_are_refused() {
    let text = || Field::new("s", DataType::Utf8, true);
    assert!(err(int("i"), &[("length", "3")]).contains("fields.i.length does not apply"));
    assert!(err(text(), &[("kind", "sequence")]).contains("needs a numeric column"));
    assert!(err(int("i"), &[("kind", "event_time")]).contains("needs a TIMESTAMP column"));
    assert!(err(int("i"), &[("kind", "often")]).contains("'sequence', 'random' or 'event_time'"));
    assert!(err(int("i"), &[("values", "1,x")]).contains("fields.i.values = '1,x' is not a valid"));
    assert!(err(int("i"), &[("min", "9"), ("max", "1")]).contains("is below"));
    assert!(err(int("i"), &[("max", "99999999999")]).contains("fields.i.max"));
    assert!(err(int("i"), &[("null_rate", "2")]).contains("from 0 to 1"));
    assert!(err(int("i"), &[("distribution", "zipf")]).contains("'uniform' or 'normal'"));
    assert!(err(int("i"), &[("mean", "3")]).contains("fields.i.mean does not apply"));
    assert!(err(int("i"), &[("values", "1"), ("min", "0")]).contains("values from a list"));
    let ts = Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), true);
    assert!(err(ts.clone(), &[("kind", "random")]).contains("need both"));
    assert!(err(ts, &[("step", "soon")]).contains("fields.ts.step must be a duration"));
    let interval = Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true);
    let e = spec(&interval, &[]).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000", "{e}");
}

fn configure(columns: Vec<Field>, options: &[(&str, &str)]) -> Result<DatagenConnector> {
    let map = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut options = Options::new("datagen", map);
    let connector = DatagenConnector::configure(&mut options, &Arc::new(Schema::new(columns)))?;
    options.finish()?;
    Ok(connector)
}

fn id() -> Vec<Field> {
    vec![Field::new("id", DataType::Int64, true)]
}

#[test]
fn totals_and_sequence_ends_bound_the_source() {
    let c = configure(id(), &[]).unwrap();
    assert_eq!(
        (c.rate, c.limit, c.finite),
        (Some(DEFAULT_RATE), None, false)
    );
    let c = configure(id(), &[("number-of-rows", "10"), ("rows-per-second", "0")]).unwrap();
    assert_eq!((c.rate, c.limit, c.finite), (None, Some(10), true));
    let c = configure(
        id(),
        &[
            ("fields.id.start", "5"),
            ("fields.id.end", "7"),
            ("datagen.rows.total", "100"),
        ],
    )
    .unwrap();
    assert_eq!((c.limit, c.finite), (Some(3), true));
    // Without an end a sequence stops at the type's maximum, but the
    // source is not declared bounded.
    let small = vec![Field::new("id", DataType::Int8, true)];
    let c = configure(small, &[("fields.id.kind", "sequence")]).unwrap();
    assert_eq!((c.limit, c.finite), (Some(128), false));
    assert_eq!(
        configure(id(), &[("datagen.rows.per.second", "unlimited")])
            .unwrap()
            .rate,
        None
    );
    assert_eq!(
        configure(id(), &[("datagen.rows.per.second", "4")])
            .unwrap()
            .default_step_ns(),
        250_000_000
    );
}

#[test]
fn bad_options_name_what_is_wrong() {
    let err = |options: &[(&str, &str)]| {
        let e = configure(id(), options).unwrap_err();
        assert_eq!(e.sqlstate(), "22023", "{e}");
        e.to_string()
    };
    assert!(err(&[("fields.nosuch.kind", "random")]).contains("no column \"nosuch\""));
    assert!(err(&[("fields.id.colour", "red")]).contains("unknown property \"colour\""));
    assert!(err(&[("fields.kind", "random")]).contains("fields.<column>.<property>"));
    assert!(err(&[("datagen.rows.per.second", "fast")]).contains("unlimited"));
    assert!(err(&[("datagen.rows.total", "-1")]).contains("datagen.rows.total"));
    let e = configure(vec![], &[]).unwrap_err();
    assert!(e.to_string().contains("column list"), "{e}");
}

#[test]
fn the_streams_are_rands_std_rng_so_seeded_rows_did_not_change() {
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha12Rng;
    let mut std = StdRng::seed_from_u64(42);
    let mut chacha = ChaCha12Rng::seed_from_u64(42);
    for _ in 0..100 {
        assert_eq!(std.next_u64(), chacha.next_u64());
        assert_eq!(std.next_u32(), chacha.next_u32());
    }
}

#[test]
fn seeking_the_streams_continues_every_column_exactly() {
    let fields = vec![
        int("v"),
        Field::new("s", DataType::Utf8, true),
        Field::new("n", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ];
    let specs: Vec<ColumnSpec> = vec![
        spec(&fields[0], &[("null_rate", "0.3")]).unwrap(),
        spec(&fields[1], &[("null_rate", "0.2"), ("length", "3")]).unwrap(),
        spec(&fields[2], &[("distribution", "normal")]).unwrap(),
        spec(
            &fields[3],
            &[("kind", "event_time"), ("max_disorder", "1s")],
        )
        .unwrap(),
    ];
    let schema = Arc::new(Schema::new(fields));
    let make = || Generator::new(&specs, schema.clone(), Some("ts"), 3, NOW, 1_000_000).unwrap();
    let mut straight = make();
    let head = straight.batch(0, 777, NOW).unwrap();
    let at = straight.streams();
    let tail = straight.batch(777, 500, NOW).unwrap();
    let mut resumed = make();
    resumed.seek(&at).unwrap();
    assert_eq!(resumed.batch(777, 500, NOW).unwrap(), tail);
    assert_ne!(head.slice(0, 500), tail);
    assert!(resumed.seek(&at[1..]).is_err());
}

/// A finite, fast datagen source over every kind of rule.
async fn resumable_source(extra: &str) -> Arc<crate::connectors::SourceRuntime> {
    crate::connectors::testing::source(&format!(
        "CREATE SOURCE r (id BIGINT, v INT, s VARCHAR, x DOUBLE, c TEXT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'datagen', {extra} datagen.rows.per.second = 'unlimited', \
         datagen.rows.total = '30000', fields.id.kind = 'sequence', \
         fields.v.min = '0', fields.v.max = '100', fields.v.null_rate = '0.1', \
         fields.s.length = '5', fields.x.distribution = 'normal', \
         fields.c.values = 'red,green,blue', \
         fields.ts.kind = 'event_time', fields.ts.max_disorder = '5ms')"
    ))
    .await
}

#[tokio::test]
async fn a_resumed_reader_makes_the_rows_an_uninterrupted_one_would() {
    use crate::connectors::testing::{all_rows, assert_same_rows, run_with_checkpoint};
    // Unseeded, with event time from the wall clock, the resumed reader
    // goes on with the seed, streams and start it recorded. (A barrier
    // before any row may come before the split's first position: such a
    // source then resumes with another seed and start, which nothing
    // emitted contradicts; a seeded one with a fixed start does not.)
    let seeded = "datagen.seed = '11', fields.ts.start = '2024-01-01 00:00:00',";
    for (extra, afters) in [(seeded, &[0, 1, 3, 4][..]), ("", &[1, 3, 4])] {
        let source = resumable_source(extra).await;
        for &after in afters {
            let (before, rest, positions) = run_with_checkpoint(&source, after).await;
            assert_eq!(before.len() + rest.len(), 30_000);
            if let Some(p) = positions.get("datagen") {
                assert!(p.starts_with(&format!("rows={};", before.len())), "{p}");
            }
            let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
            let what = format!("{extra} after {after}");
            assert_same_rows(&all_rows(&mut resumed).await, &rest, &what);
        }
    }
}

#[tokio::test]
async fn a_throttled_reader_goes_on_from_its_row_at_its_rate() {
    use crate::connectors::testing::{next, rows, rows_until_checkpoint, source};
    use crate::stream::Message;
    let source = source(
        "CREATE SOURCE t (id BIGINT) WITH (connector = 'datagen', \
         datagen.rows.per.second = '2000', fields.id.kind = 'sequence')",
    )
    .await;
    let mut reader = source.open_reader().unwrap();
    let checkpoints = reader.checkpoint_requests();
    let mut seen = Vec::new();
    while seen.len() < 50 {
        if let Some(Message::Data(b)) = next(&mut reader).await {
            seen.extend(rows(&b));
        }
    }
    checkpoints.request(9);
    seen.extend(rows_until_checkpoint(&mut reader, 9).await);
    let positions = checkpoints.take_positions(9).unwrap();
    drop(reader);
    let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
    let mut more = Vec::new();
    while more.len() < 50 {
        if let Some(Message::Data(b)) = next(&mut resumed).await {
            more.extend(rows(&b));
        }
    }
    let ids: Vec<u64> = seen
        .iter()
        .chain(&more)
        .map(|r| r.parse().unwrap())
        .collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
}
