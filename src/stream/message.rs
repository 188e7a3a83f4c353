//! [`Message`]: the one enum on every edge of a dataflow.
//!
//! It carries rows and the promises about them; it never carries control
//! state shared through mutexes. Operators must not infer time from batch
//! contents: only a `Watermark` moves event time forward.

use datafusion::arrow::record_batch::RecordBatch;

/// Event time in microseconds since the Unix epoch (UTC). One unit for every
/// watermark, whatever the unit of the column it was computed from.
pub type EventTime = i64;

/// What flows on a dataflow edge.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows. On append-only edges every row is an insertion.
    Data(RecordBatch),
    /// No later row on this edge has an event time below this value.
    /// `EventTime::MAX` means the input has ended: every window can close.
    Watermark(EventTime),
    /// A marker that splits the stream into epochs (checkpoints, FLUSH).
    Barrier(Barrier),
}

/// A point in the stream that every operator passes in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u64,
    pub kind: BarrierKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierKind {
    /// Snapshot state for checkpoint `epoch`.
    Checkpoint,
    /// Acknowledge a FLUSH ticket once everything before it is applied.
    Flush(u64),
    /// Shut down cleanly after the rows before it.
    Stop,
}

/// Renders an event time as PostgreSQL would print a `timestamp`, for
/// system tables and messages.
pub fn format_event_time(t: EventTime) -> String {
    if t == EventTime::MAX {
        return "infinity".into();
    }
    if t == EventTime::MIN {
        return "-infinity".into();
    }
    match chrono::DateTime::from_timestamp_micros(t) {
        Some(dt) => dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_print_like_timestamps() {
        assert_eq!(format_event_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_event_time(1_500_000), "1970-01-01 00:00:01.500");
        assert_eq!(format_event_time(EventTime::MAX), "infinity");
    }
}
