//! The streaming model: what flows between the parts of a dataflow.
//!
//! Time moves only through [`Message`]s: a data batch, a watermark (a promise
//! about event time) or a barrier. Sources produce them; operators (the
//! continuous-query work) consume them. Nothing here knows about SQL or the
//! wire protocol; see docs/design/0002-streaming-model.md.

mod align;
pub mod changelog;
mod dataflow;
mod message;
mod operator;

pub use dataflow::{Dataflow, KEY_GROUPS};
pub use message::{Barrier, BarrierKind, EventTime, Message, format_event_time};
pub use operator::{Chain, Operator, OperatorMetrics};
