//! Durable storage of table rows. Streaming state and checkpoints live in
//! `state/`; this folder only keeps what INSERT and COPY wrote.

mod table;

pub use table::{StoredTable, TableHandle, snapshot_scan, sync_dir};
