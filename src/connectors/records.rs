//! [`RawRecords`]: a chunk of undecoded records from one split, laid out in
//! one contiguous buffer so that decoders run over it in a single pass.
//!
//! Connectors fill it (a Kafka fetch, lines of a file or socket); formats
//! decode it. It owns no knowledge of either.

use datafusion::arrow::array::ArrayRef;

/// Up to this many bytes of a bad record are kept in the error table.
pub const RAW_ERROR_BYTES: usize = 256;

/// Records of one split, each followed by `\n` in `data`.
#[derive(Debug, Default)]
pub struct RawRecords {
    data: Vec<u8>,
    /// End (exclusive, before the separator) of each record in `data`.
    ends: Vec<usize>,
    /// Where each record came from, in the split's own unit (Kafka offset,
    /// byte offset in a file, line number on a connection).
    positions: Vec<u64>,
    /// Metadata columns asked for with INCLUDE, one value per record, in
    /// the order of `SourceSpec::metadata`. Filled by the connector after
    /// the records are pushed.
    pub metadata: Vec<ArrayRef>,
}

impl RawRecords {
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        RawRecords {
            data: Vec::with_capacity(bytes + records),
            ends: Vec::with_capacity(records),
            positions: Vec::with_capacity(records),
            metadata: Vec::new(),
        }
    }

    /// Appends one record (without its line terminator; a trailing `\r` is
    /// removed).
    pub fn push(&mut self, record: &[u8], position: u64) {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        self.data.push(b'\n');
        self.positions.push(position);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of payload (separators included), for the bytes-in counter.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Every record, each followed by `\n`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Record `i` without its separator.
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] + 1 };
        &self.data[start..self.ends[i]]
    }

    pub fn position(&self, i: usize) -> u64 {
        self.positions[i]
    }

    /// The position of the last record, if any.
    pub fn last_position(&self) -> Option<u64> {
        self.positions.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut r = RawRecords::default();
        r.push(b"{\"a\":1}", 0);
        r.push(b"x\r", 8);
        r.push(b"", 10);
        assert_eq!(r.len(), 3);
        assert_eq!(r.record(0), b"{\"a\":1}");
        assert_eq!(r.record(1), b"x");
        assert_eq!(r.record(2), b"");
        assert_eq!(r.data(), b"{\"a\":1}\nx\n\n");
        assert_eq!(r.position(1), 8);
    }
}
