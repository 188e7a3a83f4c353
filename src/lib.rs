//! runnel: a streaming SQL database that speaks the PostgreSQL wire protocol.
//!
//! A row's path through runnel, in module order:
//!
//! ```text
//!  psql / drivers ──TCP──▶ server/      pgwire handlers, Arrow <-> Postgres encoding
//!                             │
//!                             ▼
//!                          database/    Database + Session: the one front door
//!                             │ sql/    text ──parse once──▶ typed Statement
//!                             ▼
//!             ┌──────── DataFusion ────────┐
//!             │ planner, optimizer, kernels│◀── catalog/  named objects, pg_catalog,
//!             └────────────────────────────┘              information_schema, runnel_catalog
//!                  │                    │
//!                  ▼                    ▼
//!   storage/ table rows        planner/ logical plan ──▶ streaming plan
//!   (Arrow IPC log)                     │
//!                                       ▼
//!   connectors/ Kafka, files, ──▶ stream/ dataflow: Message (data, watermark, barrier)
//!   TCP, generators → Arrow         inputs (sources, views) ─▶ merge ─▶ key groups
//!                                   operators/ filter, project, windows, sessions,
//!                                   updating aggregates, joins ──▶ view rows + feed
//!                                   (SUBSCRIBE, views on views, sinks)
//!                                       │
//!                                       ▼
//!                     connectors/sinks/ Parquet files (hidden temporary, fsync, rename)
//!
//!   state/ checkpoints: barriers from database/checkpoint.rs cut every dataflow;
//!   source positions, operator state, view rows and sink files → manifest + CURRENT
//! ```
//!
//! Module map:
//! - [`error`]: the one error enum and its SQLSTATE mapping.
//! - [`sql`]: the statement enum and the parser with runnel's extensions
//!   (CREATE SOURCE, window syntax).
//! - [`catalog`]: objects by kind, persisted definitions, the PostgreSQL
//!   catalog views clients query, and runnel's system tables.
//! - [`storage`]: table rows on disk.
//! - [`connectors`]: sources: transports, formats, event time, bad input;
//!   sinks: continuous results into Parquet files.
//! - [`stream`]: the streaming model and the dataflow runtime.
//! - [`operators`]: one streaming operator per file.
//! - [`planner`]: DataFusion's logical plan to a streaming plan.
//! - [`database`]: executes statements; sessions and their settings.
//! - [`server`]: the PostgreSQL wire protocol.
//! - [`state`]: checkpoints on disk: encoded operator state, manifests.
//!
//! See docs/architecture.md.

pub mod catalog;
pub mod connectors;
pub mod database;
pub mod error;
pub mod operators;
pub mod planner;
pub mod server;
pub mod sql;
pub mod state;
pub mod storage;
pub mod stream;

pub use database::{Config, Database, Output, Session, SessionInfo};
pub use error::{Error, Result};
