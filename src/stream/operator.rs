//! The [`Operator`] trait: one step of a dataflow, and [`Chain`], operators
//! run one after another in the same task.
//!
//! One required method (`process`). Watermarks are delivered by the runtime
//! after it has taken the minimum over the operator's inputs; an operator
//! only says what a watermark completes. Operators never spawn tasks and
//! never look at the clock: dropping one frees everything it holds.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::{EventTime, Message};
use crate::error::Result;

/// What an operator holds and has dropped, for the views system table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorMetrics {
    /// Rows (groups, buffered rows) kept in state.
    pub state_rows: u64,
    /// Approximate bytes of that state.
    pub state_bytes: u64,
    /// Rows dropped because their window had already closed.
    pub late_rows: u64,
}

impl std::ops::AddAssign for OperatorMetrics {
    fn add_assign(&mut self, o: Self) {
        self.state_rows += o.state_rows;
        self.state_bytes += o.state_bytes;
        self.late_rows += o.late_rows;
    }
}

/// One step of a dataflow.
pub trait Operator: Send {
    /// For EXPLAIN and error messages.
    fn name(&self) -> String;

    /// The schema of the batches this operator emits.
    fn output_schema(&self) -> SchemaRef;

    /// Consumes a batch; pushes whatever it produces to `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;

    /// The input promises no more rows before `watermark`. Stateless
    /// operators produce nothing; windows emit what it closes.
    fn on_watermark(&mut self, _watermark: EventTime, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    fn metrics(&self) -> OperatorMetrics {
        OperatorMetrics::default()
    }

    /// The operator's state at a checkpoint barrier, as batches of its own
    /// layout (several schemas allowed, order kept). Taking it must not
    /// change what the operator emits afterwards. Stateless operators keep
    /// the default (nothing).
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Loads what [`Operator::snapshot`] returned into a freshly built
    /// operator of the same plan, before it sees any message.
    fn restore(&mut self, state: Vec<RecordBatch>) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(crate::internal!(
                "{} holds no state but a checkpoint has some for it",
                self.name()
            ))
        }
    }
}

/// Operators applied in order within one task.
#[derive(Default)]
pub struct Chain {
    operators: Vec<Box<dyn Operator>>,
}

impl Chain {
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Chain { operators }
    }

    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }

    /// Runs one message through every operator; returns what comes out,
    /// in order (a watermark after the rows it completed).
    pub fn push(&mut self, message: Message, out: &mut Vec<Message>) -> Result<()> {
        let (mut batches, watermark) = match message {
            Message::Data(batch) => (vec![batch], None),
            Message::Watermark(wm) => (Vec::new(), Some(wm)),
            barrier @ Message::Barrier(_) => {
                out.push(barrier);
                return Ok(());
            }
        };
        // Rows a watermark releases upstream pass through the rest of the
        // chain before the watermark itself.
        for op in &mut self.operators {
            let mut next = Vec::new();
            for b in batches {
                if b.num_rows() > 0 {
                    op.process(b, &mut next)?;
                }
            }
            if let Some(wm) = watermark {
                op.on_watermark(wm, &mut next)?;
            }
            batches = next;
        }
        out.extend(
            batches
                .into_iter()
                .filter(|b| b.num_rows() > 0)
                .map(Message::Data),
        );
        if let Some(wm) = watermark {
            out.push(Message::Watermark(wm));
        }
        Ok(())
    }

    pub fn metrics(&self) -> OperatorMetrics {
        let mut m = OperatorMetrics::default();
        for op in &self.operators {
            m += op.metrics();
        }
        m
    }

    /// Every operator's state, in chain order.
    pub fn snapshot(&mut self) -> Result<Vec<Vec<RecordBatch>>> {
        self.operators.iter_mut().map(|o| o.snapshot()).collect()
    }

    /// Restores what [`Chain::snapshot`] returned.
    pub fn restore(&mut self, state: Vec<Vec<RecordBatch>>) -> Result<()> {
        if state.len() != self.operators.len() {
            return Err(crate::internal!(
                "a checkpoint holds state for {} operators, the plan has {}",
                state.len(),
                self.operators.len()
            ));
        }
        for (op, s) in self.operators.iter_mut().zip(state) {
            op.restore(s)?;
        }
        Ok(())
    }

    pub fn names(&self) -> Vec<String> {
        self.operators.iter().map(|o| o.name()).collect()
    }
}
