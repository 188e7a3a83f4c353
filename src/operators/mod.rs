//! Streaming operators, one per file, each with its unit tests. They know
//! Arrow batches and event time; they do not know SQL text, sources or the
//! runtime that drives them.

mod aggregate;
mod interval_join;
mod join;
mod materialize;
mod project_filter;
mod session_window;
mod unnest;
mod updating_aggregate;
mod window_aggregate;

pub use aggregate::AggregateCall;
pub use interval_join::{IntervalJoinOperator, IntervalLayout};
pub use join::{CombinedLayout, LookupJoinOperator, LookupTable, WindowJoinOperator};
pub use materialize::{Attachment, Delivery, Subscription, ViewContents, ViewEvent, ViewTable};
pub use project_filter::{FilterOperator, ProjectionOperator};
pub use session_window::SessionWindowOperator;
pub use unnest::UnnestOperator;
pub use updating_aggregate::{UpdatingAggregateOperator, WindowEmission};
pub use window_aggregate::WindowAggregateOperator;
