//! `session_end(ts, gap)`: the end of a row's own session, `ts + gap`.
//!
//! The SESSION rewrite (sql::window) adds `window_start = ts` and
//! `window_end = session_end(ts, gap)` to each row: its proto-session,
//! which the streaming planner recognizes by this function's name and
//! merges per key in a `SessionWindowOperator`. A batch query cannot merge
//! sessions, so it refuses plans that call this function (`Session::run_query`).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The name the planner looks for.
pub const SESSION_END: &str = "session_end";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionEnd {
    signature: Signature,
}

impl SessionEnd {
    pub fn new() -> Self {
        SessionEnd {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SessionEnd {
    fn name(&self) -> &str {
        SESSION_END
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match &args[0] {
            t @ DataType::Timestamp(_, _) => Ok(t.clone()),
            other => Err(DataFusionError::Plan(format!(
                "SESSION needs a TIMESTAMP time column, not {other}"
            ))),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let ts = args.args[0].clone().into_array(rows)?;
        let gap = args.args[1].clone().into_array(rows)?;
        let end = datafusion::arrow::compute::kernels::numeric::add(&ts, &gap)?;
        Ok(ColumnarValue::Array(end))
    }
}
