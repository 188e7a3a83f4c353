//! [`LineFramer`]: cuts a byte stream (a file, a connection) into line
//! records with bounded memory, for the `file` and `tcp` connectors.
//!
//! It only frames bytes; decoding, metadata and sending belong to the
//! connector and the shared runtime.

use crate::connectors::records::{RAW_ERROR_BYTES, RawRecords};
use crate::connectors::runtime::SplitWriter;
use crate::error::Result;

/// Logs the lines that were over the limit as bad records.
pub(in crate::connectors) fn framed_rejects(
    writer: &SplitWriter,
    too_long: Vec<TooLong>,
) -> Result<()> {
    for t in too_long {
        writer.reject(
            t.position,
            format!(
                "the line is {} bytes long, over max_line_bytes ({})",
                t.length, t.limit
            ),
            &t.head,
        )?;
    }
    Ok(())
}

/// How [`LineFramer`] positions its records.
#[derive(Debug, Clone, Copy)]
pub(in crate::connectors) enum Numbering {
    /// The byte offset of the line's first byte (files).
    ByteOffset,
    /// The line number, from 1 (connections).
    LineNumber,
}

/// A line that was over the limit.
#[derive(Debug)]
pub(in crate::connectors) struct TooLong {
    pub position: u64,
    pub length: u64,
    pub limit: usize,
    /// Its first bytes.
    pub head: Vec<u8>,
}

/// The lines cut from one piece of a byte stream. Empty lines are dropped.
#[derive(Debug)]
pub(in crate::connectors) struct Framed {
    pub records: RawRecords,
    pub too_long: Vec<TooLong>,
}

/// Cuts a byte stream into lines. A line longer than `max_line` is
/// reported too long instead of being a record, and only its first bytes
/// are kept in memory (as many as a record may have, or as the error log
/// keeps).
#[derive(Debug)]
pub(in crate::connectors) struct LineFramer {
    max_line: usize,
    numbering: Numbering,
    /// The first line is a CSV header, dropped.
    skip_first: bool,
    /// The kept bytes of the line not yet terminated.
    partial: Vec<u8>,
    /// Bytes of that line seen so far, kept or not.
    line_len: u64,
    /// Stream offset of that line's first byte.
    line_start: u64,
    /// Lines completed so far.
    lines: u64,
}

impl LineFramer {
    pub fn new(max_line: usize, numbering: Numbering, skip_first: bool) -> Self {
        LineFramer {
            max_line,
            numbering,
            skip_first,
            partial: Vec::new(),
            line_len: 0,
            line_start: 0,
            lines: 0,
        }
    }

    /// Cuts the complete lines out of the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Framed {
        let mut out = Framed {
            records: RawRecords::with_capacity(data.len() / 64 + 1, data.len()),
            too_long: Vec::new(),
        };
        while let Some(i) = memchr::memchr(b'\n', data) {
            self.complete(&data[..i], 1, &mut out);
            data = &data[i + 1..];
        }
        self.keep(data);
        out
    }

    /// The stream has ended: an unterminated last line is a line too.
    pub fn finish(&mut self) -> Framed {
        let mut out = Framed {
            records: RawRecords::with_capacity(1, self.partial.len()),
            too_long: Vec::new(),
        };
        if self.line_len > 0 {
            self.complete(&[], 0, &mut out);
        }
        out
    }

    /// The stream offset where the line not yet complete starts: every
    /// byte before it belongs to a line already handed out (or dropped).
    pub fn consumed(&self) -> u64 {
        self.line_start
    }

    /// Starts over at stream offset `start`, forgetting any partial line.
    pub fn reset(&mut self, start: u64) {
        self.partial.clear();
        self.line_len = 0;
        self.line_start = start;
        self.lines = 0;
        self.skip_first = false;
    }

    fn keep(&mut self, bytes: &[u8]) {
        // Enough for the line, or for the head an overlong line reports.
        let cap = self.max_line.max(RAW_ERROR_BYTES);
        let room = cap.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.line_len += bytes.len() as u64;
    }

    /// Ends the current line with `piece`, followed by a `terminator` of
    /// 1 byte (`\n`) or 0 (end of stream).
    fn complete(&mut self, piece: &[u8], terminator: u64, out: &mut Framed) {
        let length = self.line_len + piece.len() as u64;
        let position = match self.numbering {
            Numbering::ByteOffset => self.line_start,
            Numbering::LineNumber => self.lines + 1,
        };
        self.lines += 1;
        self.line_start += length + terminator;
        let line = if self.line_len == 0 {
            piece
        } else {
            self.keep(piece);
            &self.partial[..]
        };
        if std::mem::take(&mut self.skip_first) || line.is_empty() || line == b"\r" {
            // A header, or an empty line: not a record.
        } else if length > self.max_line as u64 {
            out.too_long.push(TooLong {
                position,
                length,
                limit: self.max_line,
                head: line[..line.len().min(RAW_ERROR_BYTES)].to_vec(),
            });
        } else {
            out.records.push(line, position);
        }
        self.partial.clear();
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &Framed) -> Vec<(String, u64)> {
        (0..f.records.len())
            .map(|i| {
                let text = String::from_utf8_lossy(f.records.record(i)).to_string();
                (text, f.records.position(i))
            })
            .collect()
    }

    #[test]
    fn lines_are_cut_across_pieces_with_byte_offsets() {
        let mut l = LineFramer::new(100, Numbering::ByteOffset, false);
        let a = l.feed(b"ab\ncd");
        assert_eq!(lines(&a), vec![("ab".into(), 0)]);
        let b = l.feed(b"e\n\r\nfg\r\nh");
        assert_eq!(lines(&b), vec![("cde".into(), 3), ("fg".into(), 9)]);
        assert!(lines(&l.feed(b"")).is_empty());
        assert_eq!(lines(&l.finish()), vec![("h".into(), 13)]);
        assert!(lines(&l.finish()).is_empty());
    }

    #[test]
    fn overlong_lines_are_reported_with_their_head_and_memory_stays_bounded() {
        let mut l = LineFramer::new(4, Numbering::LineNumber, true);
        let a = l.feed(b"header\nok\n0123456789");
        assert_eq!(lines(&a), vec![("ok".into(), 2)]);
        assert!(a.too_long.is_empty());
        for _ in 0..100 {
            l.feed(&[b'x'; 1000]);
        }
        assert!(l.partial.len() <= RAW_ERROR_BYTES);
        let b = l.feed(b"\nfine\n");
        assert_eq!(lines(&b), vec![("fine".into(), 4)]);
        assert_eq!(b.too_long.len(), 1);
        assert_eq!(b.too_long[0].position, 3);
        assert_eq!(b.too_long[0].length, 100_010);
        assert_eq!(b.too_long[0].head.len(), RAW_ERROR_BYTES);
        assert!(b.too_long[0].head.starts_with(b"0123456789xx"));
        l.feed(b"toolong");
        let c = l.finish();
        assert_eq!((c.records.len(), c.too_long[0].length), (0, 7));
    }
}
