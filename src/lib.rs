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
//!             └────────────────────────────┘              information_schema
//!                             │
//!                             ▼
//!                          storage/     durable table rows (Arrow IPC log)
//! ```
//!
//! Module map:
//! - [`error`]: the one error enum and its SQLSTATE mapping.
//! - [`sql`]: the statement enum and the parser with runnel's extensions.
//! - [`catalog`]: objects by kind, persisted definitions, the PostgreSQL
//!   catalog views clients query.
//! - [`storage`]: table rows on disk.
//! - [`database`]: executes statements; sessions and their settings.
//! - [`server`]: the PostgreSQL wire protocol.
//!
//! Streaming parts plug in beside these: sources (`connectors/`) and
//! continuous queries (`planner/`, `stream/`, `operators/`) register their
//! outputs in the catalog as their own kinds, and `state/` checkpoints them.
//! See docs/architecture.md.

pub mod catalog;
pub mod connectors;
pub mod database;
pub mod error;
pub mod operators;
pub mod planner;
pub mod server;
pub mod sql;
pub mod storage;
pub mod stream;

pub use database::{Config, Database, Output, Session, SessionInfo};
pub use error::{Error, Result};
