//! SUBSCRIBE TO view: the view's rows at the start, then every change it
//! applies, as a row stream that ends only when the client cancels or goes
//! away, or when the view ends (finite input), fails or is dropped.
//!
//! The stream holds the view's broadcast receiver and nothing else of the
//! view: dropping it (cancel, disconnect, CLOSE of a cursor) is what frees
//! the subscription, and a dropped view closes the feed instead of being
//! kept alive by its subscribers. Rows of an updating view carry an `op`
//! column (`insert` / `delete`) in place of the changelog's weight. This
//! module does not speak pgwire; the server flushes each batch it yields.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{Rows, Session};
use crate::error::{CatalogErrorKind, Error, Result};
use crate::operators::{ViewContents, ViewEvent};
use crate::sql::Subscribe;
use crate::stream::changelog;

/// The column that says whether a row of an updating view was inserted or
/// deleted.
pub const OP_COLUMN: &str = "op";

impl Session {
    /// Starts a subscription: its rows come as the client reads them.
    pub(super) fn subscribe(&self, subscribe: &Subscribe) -> Result<Rows> {
        let contents = self.subscribed_view(&subscribe.view)?;
        let updating = contents.is_updating();
        let schema = output_schema(contents.schema(), updating);
        let subscription = contents.subscribe()?;
        drop(contents);
        if let Some(reason) = subscription.state.strip_prefix("failed: ") {
            return Err(failed(&subscribe.view, reason));
        }
        let snapshot = if subscribe.snapshot {
            subscription.snapshot.as_ref().clone()
        } else {
            Vec::new()
        };
        // A view that has already ended publishes nothing more.
        let feed = (subscription.state == "running").then_some(subscription.feed);
        let changes = Changes {
            view: subscribe.view.clone(),
            schema: schema.clone(),
            updating,
            snapshot: snapshot.into_iter(),
            feed,
        };
        let stream = futures::stream::unfold(changes, |mut changes| async move {
            let item = changes.next().await?;
            Some((item.map_err(|e| e.into()), changes))
        })
        .boxed();
        Ok(Rows::new(
            schema.clone(),
            Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            "SUBSCRIBE",
        ))
    }

    /// The columns a SUBSCRIBE returns, without starting it.
    pub(super) fn subscribe_schema(&self, subscribe: &Subscribe) -> Result<SchemaRef> {
        let contents = self.subscribed_view(&subscribe.view)?;
        Ok(output_schema(contents.schema(), contents.is_updating()))
    }

    fn subscribed_view(&self, name: &str) -> Result<Arc<ViewContents>> {
        self.materialized_view(name, |kind| {
            format!(
                "cannot subscribe to \"{name}\": it is a {kind}, not a materialized view{}",
                match kind {
                    crate::sql::ObjectKind::Source => " (a SELECT over a source streams too)",
                    _ => "",
                }
            )
        })
    }
}

/// The view's columns, and `op` for an updating view.
fn output_schema(view: &SchemaRef, updating: bool) -> SchemaRef {
    if !updating {
        return view.clone();
    }
    let mut fields: Vec<_> = view.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
    Arc::new(Schema::new_with_metadata(fields, view.metadata().clone()))
}

fn failed(view: &str, reason: &str) -> Error {
    Error::Data {
        sqlstate: "XX000",
        message: format!("materialized view \"{view}\" failed: {reason}"),
    }
}

/// A subscription's state between two reads.
struct Changes {
    view: String,
    schema: SchemaRef,
    updating: bool,
    /// The rows at the start, not yet sent.
    snapshot: std::vec::IntoIter<RecordBatch>,
    /// `None` once the subscription has ended.
    feed: Option<Receiver<ViewEvent>>,
}

impl Changes {
    /// The next batch of rows; `None` when the subscription ends normally.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        for batch in self.snapshot.by_ref() {
            if batch.num_rows() > 0 {
                return Some(self.inserts(batch));
            }
        }
        loop {
            let event = self.feed.as_mut()?.recv().await;
            let item = match event {
                Ok(ViewEvent::Data(batch)) => match self.changes(&batch) {
                    Ok(b) if b.num_rows() == 0 => continue,
                    other => other,
                },
                Ok(ViewEvent::Watermark(_) | ViewEvent::Flush(_) | ViewEvent::Checkpoint(_)) => {
                    continue;
                }
                Ok(ViewEvent::End) => {
                    self.feed = None;
                    return None;
                }
                Ok(ViewEvent::Failed(reason)) => Err(failed(&self.view, &reason)),
                Err(RecvError::Lagged(missed)) => Err(Error::Resources {
                    sqlstate: "53400",
                    message: format!(
                        "SUBSCRIBE to \"{}\" ended: the client fell behind the view and \
                         {missed} changes were dropped (a subscriber may lag at most a few \
                         thousand changes); read faster or subscribe again",
                        self.view
                    ),
                }),
                Err(RecvError::Closed) => Err(Error::catalog(
                    CatalogErrorKind::UndefinedTable,
                    format!(
                        "materialized view \"{}\" was dropped, which ended its subscription",
                        self.view
                    ),
                )),
            };
            if item.is_err() {
                self.feed = None;
            }
            return Some(item);
        }
    }

    /// Rows of the snapshot: inserts.
    fn inserts(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        if self.updating {
            columns.push(Arc::new(StringArray::from(vec![
                "insert";
                batch.num_rows()
            ])));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// A batch the view applied; an updating view's weights become `op`
    /// rows, one per unit of weight.
    fn changes(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if !self.updating {
            return Ok(RecordBatch::try_new(
                self.schema.clone(),
                batch.columns().to_vec(),
            )?);
        }
        let weights = changelog::weights(batch)?.values();
        let rows = changelog::strip_weight(batch);
        let op = |w: &i64| Some(if *w > 0 { "insert" } else { "delete" });
        let (mut columns, ops): (Vec<ArrayRef>, StringArray) =
            if weights.iter().all(|w| w.abs() == 1) {
                (rows.columns().to_vec(), weights.iter().map(op).collect())
            } else {
                let copies = |w: &i64| w.unsigned_abs() as usize;
                let indices: UInt32Array = weights
                    .iter()
                    .enumerate()
                    .flat_map(|(i, w)| std::iter::repeat_n(i as u32, copies(w)))
                    .collect();
                let columns = rows
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let ops = weights
                    .iter()
                    .flat_map(|w| std::iter::repeat_n(op(w), copies(w)))
                    .collect();
                (columns, ops)
            };
        columns.push(Arc::new(ops));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array};
    use datafusion::arrow::datatypes::Int32Type;

    fn changes(updating: bool) -> Changes {
        let view = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        Changes {
            view: "v".into(),
            schema: output_schema(&view, updating),
            updating,
            snapshot: Vec::new().into_iter(),
            feed: None,
        }
    }

    fn weighted(values: Vec<i32>, weights: Vec<i64>) -> RecordBatch {
        let schema =
            changelog::with_weight(&Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        changelog::weighted_batch(schema, vec![Arc::new(Int32Array::from(values))], weights)
            .unwrap()
    }

    fn text(batch: &RecordBatch) -> Vec<String> {
        let a = batch.column(0).as_primitive::<Int32Type>();
        let op = batch.column(1).as_string::<i32>();
        (0..batch.num_rows())
            .map(|i| format!("{} {}", a.value(i), op.value(i)))
            .collect()
    }

    #[test]
    fn weights_become_one_op_row_per_unit() {
        let c = changes(true);
        let b = c.changes(&weighted(vec![1, 2], vec![1, -1])).unwrap();
        assert_eq!(text(&b), ["1 insert", "2 delete"]);
        let b = c.changes(&weighted(vec![1, 2, 3], vec![2, 0, -1])).unwrap();
        assert_eq!(text(&b), ["1 insert", "1 insert", "3 delete"]);
        let snapshot = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)])),
            vec![Arc::new(Int32Array::from(vec![7]))],
        )
        .unwrap();
        assert_eq!(text(&c.inserts(snapshot).unwrap()), ["7 insert"]);
    }

    #[tokio::test]
    async fn the_feed_ends_the_stream_by_event() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let rows = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1]))])
            .unwrap();
        for (events, expect) in [
            (vec![ViewEvent::End], None),
            (vec![ViewEvent::Failed("boom".into())], Some("XX000")),
        ] {
            let (tx, rx) = tokio::sync::broadcast::channel(4);
            let mut c = changes(false);
            c.feed = Some(rx);
            tx.send(ViewEvent::Watermark(1)).unwrap();
            tx.send(ViewEvent::Data(rows.clone())).unwrap();
            for e in events {
                tx.send(e).unwrap();
            }
            assert_eq!(c.next().await.unwrap().unwrap().num_rows(), 1);
            match (c.next().await, expect) {
                (None, None) => {}
                (Some(Err(e)), Some(state)) => assert_eq!(e.sqlstate(), state),
                (other, _) => panic!("{:?}", other.map(|r| r.map(|b| b.num_rows()))),
            }
            assert!(c.next().await.is_none(), "nothing after the end");
        }
        // A receiver that fell behind the channel's capacity: 53400.
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let mut c = changes(false);
        c.feed = Some(rx);
        for _ in 0..4 {
            tx.send(ViewEvent::Data(rows.clone())).unwrap();
        }
        assert_eq!(c.next().await.unwrap().unwrap_err().sqlstate(), "53400");
        // The view dropped: its sender is gone.
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let mut c = changes(false);
        c.feed = Some(rx);
        drop(tx);
        let e = c.next().await.unwrap().unwrap_err();
        assert_eq!(e.sqlstate(), "42P01");
        assert!(e.to_string().contains("dropped"), "{e}");
    }
}
