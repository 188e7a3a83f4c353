//! `hop_starts(ts, slide, size)`: the starts of every hopping window that
//! contains `ts`, as a list (windows aligned to the Unix epoch, like
//! `date_bin`). The HOP rewrite unnests it into one row per window.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, PrimitiveArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopStarts {
    signature: Signature,
}

impl HopStarts {
    pub fn new() -> Self {
        HopStarts {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// An interval literal in nanoseconds; months are refused (a month has no
/// fixed length).
fn interval_nanos(v: &ColumnarValue, what: &str) -> datafusion::error::Result<i64> {
    let ColumnarValue::Scalar(s) = v else {
        return Err(DataFusionError::Plan(format!(
            "the HOP {what} must be a constant interval"
        )));
    };
    let nanos = match s {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i.days as i64 * 86_400_000_000_000 + i.nanoseconds
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i.days as i64 * 86_400_000_000_000 + i.milliseconds as i64 * 1_000_000
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "the HOP {what} must be an interval of days or less, not {other}"
            )));
        }
    };
    if nanos <= 0 {
        return Err(DataFusionError::Plan(format!(
            "the HOP {what} must be above zero"
        )));
    }
    Ok(nanos)
}

impl ScalarUDFImpl for HopStarts {
    fn name(&self) -> &str {
        "hop_starts"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match &args[0] {
            t @ DataType::Timestamp(_, _) => Ok(DataType::List(Arc::new(Field::new_list_field(
                t.clone(),
                true,
            )))),
            other => Err(DataFusionError::Plan(format!(
                "HOP needs a TIMESTAMP time column, not {other}"
            ))),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let slide = interval_nanos(&args.args[1], "slide")?;
        let size = interval_nanos(&args.args[2], "size")?;
        let rows = args.number_rows;
        let ts = args.args[0].clone().into_array(rows)?;
        let DataType::Timestamp(unit, tz) = ts.data_type().clone() else {
            return Err(DataFusionError::Plan(
                "HOP needs a TIMESTAMP time column".into(),
            ));
        };
        let per = match unit {
            TimeUnit::Second => 1_000_000_000,
            TimeUnit::Millisecond => 1_000_000,
            TimeUnit::Microsecond => 1_000,
            TimeUnit::Nanosecond => 1,
        };
        if slide % per != 0 || size % per != 0 {
            return Err(DataFusionError::Plan(
                "the HOP slide and size must be whole units of the time column".into(),
            ));
        }
        let (slide, size) = (slide / per, size / per);
        let raw = datafusion::arrow::compute::cast(&ts, &DataType::Int64)?;
        let raw = raw.as_primitive::<Int64Type>();
        let windows = ((size + slide - 1) / slide) as usize;
        let mut values: Vec<i64> = Vec::with_capacity(rows * windows);
        let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
        offsets.push(0);
        for row in 0..rows {
            if raw.is_valid(row) {
                let t = raw.value(row);
                let mut start = t.div_euclid(slide) * slide;
                while start + size > t {
                    values.push(start);
                    start -= slide;
                }
            }
            offsets.push(values.len() as i32);
        }
        // Earliest window first.
        for w in offsets.windows(2) {
            values[w[0] as usize..w[1] as usize].reverse();
        }
        let item = DataType::Timestamp(unit, tz);
        let values: ArrayRef = datafusion::arrow::compute::cast(
            &(Arc::new(PrimitiveArray::<Int64Type>::from(values)) as ArrayRef),
            &item,
        )?;
        let nulls = raw.nulls().cloned();
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(item, true)),
            OffsetBuffer::new(offsets.into()),
            values,
            nulls,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}
