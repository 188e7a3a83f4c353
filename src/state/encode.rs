//! State parts as bytes: each part is a sequence of Arrow IPC streams, one
//! per batch list (an operator's state, a view's rows), so every column
//! keeps its exact type and nothing is converted row by row.
//!
//! Layout of a part: `u32` count of lists, then per list a `u64` length and
//! that many bytes of one IPC stream (empty lists are zero bytes). Batches
//! of one list may have different schemas: each schema change starts a new
//! IPC stream inside the list, marked by a `u32` stream count first.

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Encodes lists of batches (one list per operator of a chain, say).
pub fn encode_parts(lists: &[Vec<RecordBatch>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        let bytes = encode_list(list)?;
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// The inverse of [`encode_parts`]; `what` names the part in errors.
pub fn decode_parts(bytes: &[u8], what: &str) -> Result<Vec<Vec<RecordBatch>>> {
    let mut at = 0usize;
    let count = read_u32(bytes, &mut at, what)? as usize;
    let mut lists = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = read_u64(bytes, &mut at, what)? as usize;
        let body = bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| corrupt(what, "truncated"))?;
        at += len;
        lists.push(decode_list(body, what)?);
    }
    if at != bytes.len() {
        return Err(corrupt(what, "trailing bytes"));
    }
    Ok(lists)
}

fn encode_list(list: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if list.is_empty() {
        return Ok(out);
    }
    // Runs of batches with one schema share an IPC stream.
    let mut runs: Vec<&[RecordBatch]> = Vec::new();
    let mut start = 0;
    for i in 1..=list.len() {
        if i == list.len() || list[i].schema() != list[start].schema() {
            runs.push(&list[start..i]);
            start = i;
        }
    }
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for run in runs {
        let mut stream = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut stream, &run[0].schema())?;
            for b in run {
                w.write(b)?;
            }
            w.finish()?;
        }
        out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
        out.extend_from_slice(&stream);
    }
    Ok(out)
}

fn decode_list(bytes: &[u8], what: &str) -> Result<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut at = 0usize;
    let runs = read_u32(bytes, &mut at, what)?;
    let mut out = Vec::new();
    for _ in 0..runs {
        let len = read_u64(bytes, &mut at, what)? as usize;
        let body = bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| corrupt(what, "truncated"))?;
        at += len;
        let reader = StreamReader::try_new(Cursor::new(body), None)
            .map_err(|e| corrupt(what, &e.to_string()))?;
        for b in reader {
            out.push(b.map_err(|e| corrupt(what, &e.to_string()))?);
        }
    }
    Ok(out)
}

fn read_u32(bytes: &[u8], at: &mut usize, what: &str) -> Result<u32> {
    let b = bytes
        .get(*at..*at + 4)
        .ok_or_else(|| corrupt(what, "truncated"))?;
    *at += 4;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn read_u64(bytes: &[u8], at: &mut usize, what: &str) -> Result<u64> {
    let b = bytes
        .get(*at..*at + 8)
        .ok_or_else(|| corrupt(what, "truncated"))?;
    *at += 8;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn corrupt(what: &str, why: &str) -> Error {
    Error::Internal(format!("checkpoint state {what} cannot be read: {why}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn lists_of_mixed_schemas_come_back_exactly() {
        let a = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]))],
        )
        .unwrap();
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["p", "q"]))],
        )
        .unwrap();
        let lists = vec![
            vec![],
            vec![a.clone(), b.clone(), a.clone()],
            vec![b.clone()],
        ];
        let bytes = encode_parts(&lists).unwrap();
        let back = decode_parts(&bytes, "test").unwrap();
        assert_eq!(back, lists);
        assert!(decode_parts(&bytes[..bytes.len() - 3], "test").is_err());
    }
}
