//! The changelog encoding of updating edges (docs/design/0005): a trailing
//! `__weight` Int64 column, `+1` inserts a row, `-1` deletes one copy of an
//! equal row. Append-only edges carry no weight column.
//!
//! This file owns the column's name and the helpers that add, read and
//! strip it; it knows nothing of operators.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// The name of the weight column on updating edges.
pub const WEIGHT_COLUMN: &str = "__weight";

pub fn weight_field() -> Field {
    Field::new(WEIGHT_COLUMN, DataType::Int64, false)
}

/// `schema` with the weight column appended.
pub fn with_weight(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(weight_field()));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether `schema` describes an updating edge.
pub fn is_updating(schema: &Schema) -> bool {
    schema
        .fields()
        .last()
        .is_some_and(|f| f.name() == WEIGHT_COLUMN && f.data_type() == &DataType::Int64)
}

/// `schema` without its weight column (unchanged when it has none).
pub fn without_weight(schema: &Schema) -> SchemaRef {
    if !is_updating(schema) {
        return Arc::new(schema.clone());
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .take(schema.fields().len() - 1)
        .cloned()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The weights of an updating batch (its last column).
pub fn weights(batch: &RecordBatch) -> Result<&Int64Array> {
    let column = batch
        .columns()
        .last()
        .ok_or_else(|| crate::internal!("an updating batch without columns"))?;
    column
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| crate::internal!("the last column of an updating batch is not Int64"))
}

/// Appends a weight column to `columns` and builds the batch.
pub fn weighted_batch(
    schema: SchemaRef,
    mut columns: Vec<ArrayRef>,
    weights: Vec<i64>,
) -> Result<RecordBatch> {
    columns.push(Arc::new(Int64Array::from(weights)));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Every row of `batch` as an insertion.
pub fn as_inserts(batch: &RecordBatch, schema: SchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    weighted_batch(schema, batch.columns().to_vec(), vec![1; rows])
}

/// The rows of an updating batch without the weight column.
pub fn strip_weight(batch: &RecordBatch) -> RecordBatch {
    let n = batch.num_columns();
    if n == 0 || !is_updating(batch.schema_ref()) {
        return batch.clone();
    }
    batch
        .project(&(0..n - 1).collect::<Vec<_>>())
        .unwrap_or_else(|_| batch.clone())
}

/// Counts the rows of an updating batch by sign: (inserts, deletes).
pub fn count_signs(weights: &Int64Array) -> (u64, u64) {
    let mut ins = 0;
    let mut del = 0;
    for w in weights.values().iter() {
        if *w > 0 {
            ins += *w as u64;
        } else {
            del += w.unsigned_abs();
        }
    }
    (ins, del)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    #[test]
    fn weights_round_trip() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int32, true)]);
        let updating = with_weight(&schema);
        assert!(is_updating(&updating));
        assert!(!is_updating(&schema));
        assert_eq!(without_weight(&updating).as_ref(), &schema);
        let plain = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .unwrap();
        let b = as_inserts(&plain, updating).unwrap();
        assert_eq!(weights(&b).unwrap().values().as_ref(), &[1, 1]);
        assert_eq!(strip_weight(&b), plain);
        assert_eq!(count_signs(weights(&b).unwrap()), (2, 0));
    }
}
