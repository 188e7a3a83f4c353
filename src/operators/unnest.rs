//! [`UnnestOperator`]: one row per element of a list column, the other
//! columns repeated (`take` with repeated indices; values flattened, no
//! per-row work beyond building the index array). HOP windows use it: each
//! row is unnested into the windows it belongs to.

use datafusion::arrow::array::{Array, AsArray, UInt32Builder};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::stream::Operator;

pub struct UnnestOperator {
    /// The input column holding the lists.
    list_column: usize,
    /// For each output column, the input column it comes from.
    sources: Vec<usize>,
    schema: SchemaRef,
}

impl UnnestOperator {
    pub fn new(list_column: usize, sources: Vec<usize>, schema: SchemaRef) -> Self {
        UnnestOperator {
            list_column,
            sources,
            schema,
        }
    }
}

impl Operator for UnnestOperator {
    fn name(&self) -> String {
        format!("Unnest: column {}", self.list_column)
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let lists = batch.column(self.list_column).as_list::<i32>();
        let offsets = lists.value_offsets();
        let mut repeat = UInt32Builder::with_capacity(lists.values().len());
        for row in 0..lists.len() {
            if lists.is_null(row) {
                continue;
            }
            let n = (offsets[row + 1] - offsets[row]) as usize;
            repeat.append_value_n(row as u32, n);
        }
        let repeat = repeat.finish();
        let start = offsets[0] as usize;
        let end = offsets[lists.len()] as usize;
        let mut values = lists.values().slice(start, end - start);
        if lists.null_count() > 0 {
            // Null lists contribute no elements, but their offsets may
            // still span values: keep only the elements of non-null rows.
            let mut keep = UInt32Builder::with_capacity(repeat.len());
            for row in 0..lists.len() {
                if !lists.is_null(row) {
                    for i in offsets[row]..offsets[row + 1] {
                        keep.append_value(i as u32 - start as u32);
                    }
                }
            }
            values = take(&values, &keep.finish(), None)?;
        }
        let columns = self
            .sources
            .iter()
            .zip(self.schema.fields())
            .map(|(&source, field)| {
                let column = if source == self.list_column {
                    values.clone()
                } else {
                    take(batch.column(source), &repeat, None)?
                };
                if column.data_type() == field.data_type() {
                    Ok(column)
                } else {
                    cast(&column, field.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        if batch.num_rows() > 0 {
            out.push(batch);
        }
        Ok(())
    }
}
