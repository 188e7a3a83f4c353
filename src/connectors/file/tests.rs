//! Unit tests of resuming the file connector from checkpoint positions:
//! exactly the lines after the barrier, for files read to their end, files
//! that grow, partial lines, rotation and truncation.

use std::io::Write;
use std::path::Path;

use super::*;
use crate::connectors::testing::{
    all_rows, next, rows, rows_until_checkpoint, run_with_checkpoint, source,
};
use crate::connectors::{SourceReader, SourceRuntime};
use crate::stream::{Barrier, BarrierKind, Message};

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn raw_source(path: &str, follow: bool) -> Arc<SourceRuntime> {
    source(&format!(
        "CREATE SOURCE lines WITH (connector = 'file', path = '{path}', follow = '{follow}', \
         poll_interval = '10ms') FORMAT RAW"
    ))
    .await
}

/// Reads until `n` rows have come, ignoring other messages.
async fn take_rows(reader: &mut SourceReader, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(reader).await {
            Some(Message::Data(b)) => out.extend(rows(&b)),
            Some(_) => {}
            None => panic!("the reader ended after {out:?}"),
        }
    }
    assert_eq!(out.len(), n, "more rows than expected: {out:?}");
    out
}

/// Everything available now: the rows before a FLUSH barrier.
async fn rows_until_flush(reader: &mut SourceReader, ticket: u64) -> Vec<String> {
    reader.flush_requests().request(ticket);
    let mut out = Vec::new();
    loop {
        match next(reader).await {
            Some(Message::Data(b)) => out.extend(rows(&b)),
            Some(Message::Barrier(Barrier {
                kind: BarrierKind::Flush(t),
                ..
            })) if t == ticket => return out,
            Some(_) => {}
            None => panic!("the reader ended before FLUSH {ticket}"),
        }
    }
}

fn lines(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("line {i:07} {}", "x".repeat(40)))
        .collect()
}

#[tokio::test]
async fn a_resumed_reader_reads_exactly_the_lines_after_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    // A small file read in one chunk, then one of several chunks.
    let small = lines(0..10);
    let big = lines(10..60_000);
    append(&dir.path().join("a.log"), &(small.join("\n") + "\n"));
    append(&dir.path().join("b.log"), &(big.join("\n") + "\n"));
    let pattern = format!("{}/*.log", dir.path().display());
    let source = raw_source(&pattern, false).await;
    let everything: Vec<String> = small.iter().chain(&big).cloned().collect();

    for after in [0, 1, 2, 3] {
        let (before, rest, positions) = run_with_checkpoint(&source, after).await;
        assert_eq!([before.clone(), rest.clone()].concat(), everything);
        let a = dir.path().join("a.log").display().to_string();
        if after > 0 {
            // A file read to its end stays recorded.
            assert!(positions.contains_key(&a), "{positions:?}");
        }
        let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
        assert_eq!(all_rows(&mut resumed).await, rest, "after {after} batches");
    }
}

#[tokio::test]
async fn a_followed_file_resumes_after_its_last_complete_line_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, "one\ntwo\nthr");
    let source = raw_source(&path.display().to_string(), true).await;
    let mut reader = source.open_reader().unwrap();
    assert_eq!(take_rows(&mut reader, 2).await, ["one", "two"]);
    // The split is idle now: the barrier still comes at once.
    let checkpoints = reader.checkpoint_requests();
    checkpoints.request(4);
    assert!(rows_until_checkpoint(&mut reader, 4).await.is_empty());
    let positions = checkpoints.take_positions(4).unwrap();
    assert_eq!(checkpoints.take_positions(4), None, "taken once");
    assert_eq!(positions.len(), 1, "{positions:?}");
    assert!(
        positions[&path.display().to_string()].starts_with("offset=8;"),
        "{positions:?}"
    );
    // More is written while the first reader still runs; it sees it too.
    append(&path, "ee\nfour\n");
    assert_eq!(take_rows(&mut reader, 2).await, ["three", "four"]);
    drop(reader);
    append(&path, "five\n");

    let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
    assert_eq!(
        rows_until_flush(&mut resumed, 1).await,
        ["three", "four", "five"]
    );
    append(&path, "six\n");
    assert_eq!(take_rows(&mut resumed, 1).await, ["six"]);
    // A checkpoint of the resumed reader records where it is now.
    let checkpoints = resumed.checkpoint_requests();
    checkpoints.request(5);
    rows_until_checkpoint(&mut resumed, 5).await;
    let again = checkpoints.take_positions(5).unwrap();
    drop(resumed);
    let mut last = source.open_reader_at(Some(&again)).unwrap();
    append(&path, "seven\n");
    assert_eq!(rows_until_flush(&mut last, 2).await, ["seven"]);
}

#[tokio::test]
async fn a_rotated_file_is_found_by_identity_and_a_rewritten_one_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rotated = dir.path().join("app.log.1");
    let other = dir.path().join("other.log");
    let again = dir.path().join("again.log");
    append(&log, "a1\na2\n");
    append(&other, "o1\no2\n");
    append(&again, "g1\n");
    let pattern = format!("{}/*.log*", dir.path().display());
    let source = raw_source(&pattern, true).await;
    let mut reader = source.open_reader().unwrap();
    let mut first = rows_until_flush(&mut reader, 1).await;
    first.sort();
    assert_eq!(first, ["a1", "a2", "g1", "o1", "o2"]);
    let checkpoints = reader.checkpoint_requests();
    checkpoints.request(1);
    rows_until_checkpoint(&mut reader, 1).await;
    let positions = checkpoints.take_positions(1).unwrap();
    drop(reader);

    // While down: app.log is rotated and written on, a new app.log starts,
    // other.log is rewritten shorter and again.log longer, in place.
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, "a3\n");
    append(&log, "b1\n");
    std::fs::write(&other, "n\n").unwrap();
    std::fs::write(&again, "h1\nh2\n").unwrap();

    let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
    let mut rest = rows_until_flush(&mut resumed, 1).await;
    rest.sort();
    assert_eq!(rest, ["a3", "b1", "h1", "h2", "n"]);
}

#[tokio::test]
async fn files_gone_since_the_checkpoint_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.log"),
        dir.path().join("b.log"),
        dir.path().join("c.log"),
    );
    append(&a, "a\n");
    append(&b, "b\n");
    let pattern = format!("{}/*.log", dir.path().display());
    let source = raw_source(&pattern, false).await;
    let (before, rest, positions) = run_with_checkpoint(&source, 2).await;
    assert_eq!((before.len(), rest.len(), positions.len()), (2, 0, 2));
    std::fs::remove_file(&a).unwrap();
    append(&c, "c\n");

    let mut resumed = source.open_reader_at(Some(&positions)).unwrap();
    assert_eq!(take_rows(&mut resumed, 1).await, ["c"]);
    let checkpoints = resumed.checkpoint_requests();
    checkpoints.request(2);
    rows_until_checkpoint(&mut resumed, 2).await;
    let later = checkpoints.take_positions(2).unwrap();
    let listed: Vec<&str> = later.keys().map(String::as_str).collect();
    let name = |p: &Path| p.display().to_string();
    assert_eq!(listed, [name(&b), name(&c)], "{later:?}");
    let mut again = source.open_reader_at(Some(&later)).unwrap();
    let checkpoints = again.checkpoint_requests();
    assert!(all_rows(&mut again).await.is_empty());
    // Ended, it emits no more barriers; its final positions stand in.
    checkpoints.request(3);
    assert_eq!(checkpoints.take_positions(3), Some(later));
}
