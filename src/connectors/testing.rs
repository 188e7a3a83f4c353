//! Helpers for the connectors' unit tests: a running source from its
//! CREATE SOURCE statement, and readers driven message by message with
//! every wait bounded. Test-only.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::{SourceReader, SourceRuntime, SourceSpec, SplitPositions};
use crate::sql::{Parser, Statement};
use crate::stream::{Barrier, BarrierKind, Message};

/// Bound on any one wait for a message.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The source a CREATE SOURCE statement describes, as at startup (no
/// reachability check).
pub async fn source(sql: &str) -> Arc<SourceRuntime> {
    let parsed = Parser::new()
        .parse_single(sql)
        .unwrap()
        .expect("one statement");
    let Statement::CreateSource(create) = parsed.statement else {
        panic!("not a CREATE SOURCE: {sql}");
    };
    let ctx = SessionContext::new();
    let declared = if create.columns.is_empty() {
        Arc::new(Schema::empty())
    } else {
        let columns: Vec<String> = create.columns.iter().map(|c| c.to_string()).collect();
        let table = format!("CREATE TABLE source_columns ({})", columns.join(", "));
        match ctx.state().create_logical_plan(&table).await.unwrap() {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
                Arc::new(c.input.schema().as_arrow().clone())
            }
            other => panic!("columns planned as {other:?}"),
        }
    };
    let (spec, connector) = SourceSpec::try_new(&create, declared, &ctx.state()).unwrap();
    SourceRuntime::try_new(spec, connector, false)
        .await
        .unwrap()
}

/// The next message, failing the test after [`TIMEOUT`].
pub async fn next(reader: &mut SourceReader) -> Option<Message> {
    tokio::time::timeout(TIMEOUT, reader.next())
        .await
        .unwrap_or_else(|_| panic!("no message within {TIMEOUT:?}"))
        .map(|m| m.unwrap())
}

/// Each row as its values joined with `|`.
pub fn rows(batch: &RecordBatch) -> Vec<String> {
    (0..batch.num_rows())
        .map(|i| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(i) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(c, i).unwrap()
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// Reads until the next checkpoint barrier (which must be of `epoch`),
/// returning the rows before it.
pub async fn rows_until_checkpoint(reader: &mut SourceReader, epoch: u64) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match next(reader).await {
            Some(Message::Data(b)) => out.extend(rows(&b)),
            Some(Message::Barrier(Barrier {
                epoch: e,
                kind: BarrierKind::Checkpoint,
            })) => {
                assert_eq!(e, epoch, "checkpoint barrier of another epoch");
                return out;
            }
            Some(_) => {}
            None => panic!("the reader ended before checkpoint {epoch}"),
        }
    }
}

/// Every row until a finite reader ends.
pub async fn all_rows(reader: &mut SourceReader) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = next(reader).await {
        if let Message::Data(b) = m {
            out.extend(rows(&b));
        }
    }
    out
}

/// Reads a finite source to its end with checkpoint 1 asked for once
/// `after` batches have come: the rows before the barrier, the rows after
/// it, and the positions recorded with it.
pub async fn run_with_checkpoint(
    source: &SourceRuntime,
    after: usize,
) -> (Vec<String>, Vec<String>, SplitPositions) {
    let mut reader = source.open_reader().unwrap();
    let checkpoints = reader.checkpoint_requests();
    let (mut before, mut rest) = (Vec::new(), Vec::new());
    let mut batches = 0;
    let mut barrier = false;
    if after == 0 {
        checkpoints.request(1);
    }
    while let Some(m) = next(&mut reader).await {
        match m {
            Message::Data(b) if barrier => rest.extend(rows(&b)),
            Message::Data(b) => {
                before.extend(rows(&b));
                batches += 1;
                if batches == after {
                    checkpoints.request(1);
                }
            }
            Message::Barrier(Barrier {
                epoch: 1,
                kind: BarrierKind::Checkpoint,
            }) => barrier = true,
            _ => {}
        }
    }
    assert!(barrier, "the reader ended before its checkpoint barrier");
    let positions = checkpoints
        .take_positions(1)
        .expect("positions of checkpoint 1");
    (before, rest, positions)
}

/// Asserts `got == want`, naming the first difference rather than
/// printing every row.
#[track_caller]
pub fn assert_same_rows(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: row {i} differs:\n  got  {}\n  want {}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: as many rows");
}
