//! SQL surface: the typed statement enum and the parser that produces it.
//!
//! Everything downstream matches on [`Statement`]; nothing matches on SQL
//! text. New statements (CREATE SOURCE, SUBSCRIBE, ...) are added here: a
//! variant in `statement.rs` and an extension parser in `parser.rs`.

mod copy;
mod parser;
mod rewrite;
mod sink;
mod source;
mod statement;
mod subscribe;
mod window;

pub use parser::{ParsedStatement, Parser, object_name};
pub use sink::{CreateSink, SinkInput};
pub use source::{CreateSource, IncludeClause, WatermarkClause};
pub use statement::*;
