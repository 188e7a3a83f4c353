//! The `file` connector end to end: a file, a directory and a glob; JSON
//! lines, CSV and raw lines; bad records; metadata columns; CREATE errors;
//! and follow mode (appends, partial lines, new files, rotation in both
//! its forms, truncation).
//!
//! A follow-mode query never ends by itself. These tests read one through a
//! cursor (`DECLARE ... ; FETCH n`), which keeps one reader alive between
//! file changes, and bound every wait with a timeout that fails clearly.

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::{TestServer, sqlstate, summarize};

/// How long any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("no answer within {WAIT:?}: {what}"))
}

/// Runs `sql` and returns its rows as `a|b|c` text.
pub async fn rows(client: &Client, sql: &str) -> Vec<String> {
    let messages = within(sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    summarize(&messages)
        .into_iter()
        .filter(|r| !r.starts_with("complete "))
        .collect()
}

/// Runs `sql`, which must fail; returns (SQLSTATE, message).
pub async fn failure(client: &Client, sql: &str) -> (String, String) {
    match within(sql, client.simple_query(sql)).await {
        Ok(out) => panic!("{sql} should fail, returned {:?}", summarize(&out)),
        Err(e) => {
            let message = e.as_db_error().map(|d| d.message().to_string());
            (sqlstate(&e), message.unwrap_or_default())
        }
    }
}

fn write(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn append(path: &Path, content: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all(content).expect("append");
}

#[tokio::test]
async fn finite_sources_read_a_file_a_glob_and_a_directory_then_end() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(
        &dir.path().join("a.json"),
        b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n{\"id\": 3}",
    );
    write(
        &dir.path().join("b.json"),
        b"{\"id\": 4, \"name\": \"d\"}\n",
    );
    write(&dir.path().join(".hidden.json"), b"{\"id\": 99}\n");
    write(&dir.path().join("notes.txt"), b"{\"id\": 5}\n");

    client
        .batch_execute(&format!(
            "CREATE SOURCE one (id INT, name TEXT) WITH (connector = 'file', path = '{d}/a.json') FORMAT JSON;
             CREATE SOURCE some (id INT) WITH (connector = 'file', path = '{d}/*.json') FORMAT JSON;
             CREATE SOURCE every (id INT) WITH (connector = 'file', path = '{d}') FORMAT JSON"
        ))
        .await
        .unwrap();
    // The last line has no newline: at the end of a finite file it is a record.
    assert_eq!(
        rows(&client, "SELECT id, name FROM one ORDER BY id").await,
        ["1|a", "2|b", "3|NULL"]
    );
    assert_eq!(rows(&client, "SELECT count(*) FROM one").await, ["3"]);
    // Hidden files are skipped by the glob as by a shell, and in a directory.
    assert_eq!(
        rows(&client, "SELECT id FROM some ORDER BY id").await,
        ["1", "2", "3", "4"]
    );
    assert_eq!(
        rows(&client, "SELECT id FROM every ORDER BY id").await,
        ["1", "2", "3", "4", "5"]
    );
    // Every reader reads from the start again.
    assert_eq!(rows(&client, "SELECT sum(id) FROM every").await, ["15"]);
}

#[tokio::test]
async fn csv_with_header_and_delimiter_and_raw_lines_with_metadata() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("csv");
    fs::create_dir(&csv).unwrap();
    write(
        &csv.join("1.csv"),
        b"id;city;n\n1;Oslo;10\n2;\"Rome;Italy\";20\n",
    );
    write(&csv.join("2.csv"), b"id;city;n\r\n3;Lima;30\r\n");
    let raw = dir.path().join("raw.txt");
    write(&raw, b"alpha\nbeta\n\n  gamma delta\nomega");

    client
        .batch_execute(&format!(
            "CREATE SOURCE cities (id INT, city TEXT, n BIGINT)
               WITH (connector = 'file', path = '{}') FORMAT CSV (header = true, delimiter = ';');
             CREATE SOURCE lines INCLUDE file INCLUDE offset AS off
               WITH (connector = 'file', path = '{}') FORMAT RAW",
            csv.display(),
            raw.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT id, city, n FROM cities ORDER BY id").await,
        ["1|Oslo|10", "2|Rome;Italy|20", "3|Lima|30"]
    );
    let file = raw.display().to_string();
    assert_eq!(
        rows(&client, "SELECT line, _file, off FROM lines").await,
        [
            format!("alpha|{file}|0"),
            format!("beta|{file}|6"),
            format!("  gamma delta|{file}|12"),
            format!("omega|{file}|26"),
        ]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT split_part(line, ' ', 3) FROM lines WHERE line LIKE '%gamma%'"
        )
        .await,
        ["gamma"]
    );
}

#[tokio::test]
async fn bad_records_are_skipped_and_every_good_record_arrives() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.json");
    let lines: [&[u8]; 7] = [
        b"{\"id\": 1, \"ts\": \"2026-01-01T00:00:01\"}",
        b"{\"id\": 2, \"ts\": \"2026-01-01T00:00:0",
        b"{\"id\": \"three\", \"ts\": \"2026-01-01T00:00:03\"}",
        b"{\"id\": 4}",
        b"{\"id\": 5, \"note\": \"\xff\xfe\", \"ts\": \"2026-01-01T00:00:05\"}",
        b"{\"id\": 6, \"ts\": \"2026-01-01T00:00:06\"}",
        b"[7]",
    ];
    let mut content = Vec::new();
    let mut offsets = Vec::new();
    for l in lines {
        offsets.push(content.len());
        content.extend_from_slice(l);
        content.push(b'\n');
    }
    write(&path, &content);
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               WITH (connector = 'file', path = '{}') FORMAT JSON",
            path.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT id FROM ev ORDER BY id").await,
        ["1", "6"]
    );
    let expected: Vec<String> = [1, 2, 3, 4, 6]
        .iter()
        .map(|&i| format!("{}|{}", path.display(), offsets[i]))
        .collect();
    assert_eq!(
        rows(
            &client,
            "SELECT split, \"position\" FROM runnel_catalog.source_errors \
             WHERE source = 'ev' ORDER BY \"position\""
        )
        .await,
        expected
    );
}

#[tokio::test]
async fn on_error_fail_names_the_file_and_offset() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strict.json");
    write(
        &path,
        b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": oops}\n{\"id\": 4}\n",
    );
    client
        .batch_execute(&format!(
            "CREATE SOURCE strict (id INT) WITH (connector = 'file', path = '{}', on_error = 'fail') FORMAT JSON",
            path.display()
        ))
        .await
        .unwrap();
    let (state, message) = failure(&client, "SELECT id FROM strict").await;
    assert_eq!(state, "22P02", "{message}");
    let at = format!("{} at position 20", path.display());
    assert!(message.contains(&at), "{message}");
}

#[tokio::test]
async fn create_refuses_missing_paths_and_unknown_options() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let missing = format!(
        "CREATE SOURCE gone (id INT) WITH (connector = 'file', path = '{d}/nope.json') FORMAT JSON"
    );
    let (state, message) = failure(&client, &missing).await;
    assert_eq!(state, "22023", "{message}");
    assert!(message.contains("nope.json"), "{message}");
    assert_eq!(failure(&client, "SELECT * FROM gone").await.0, "42P01");

    let unmatched = format!(
        "CREATE SOURCE later (id INT) WITH (connector = 'file', path = '{d}/*.json') FORMAT JSON"
    );
    assert_eq!(failure(&client, &unmatched).await.0, "22023");
    write(&dir.path().join("x.json"), b"{\"id\": 1}\n");
    let typo = format!(
        "CREATE SOURCE typo (id INT) WITH (connector = 'file', path = '{d}/x.json', folow = 'true') FORMAT JSON"
    );
    let (state, message) = failure(&client, &typo).await;
    assert_eq!(state, "22023", "{message}");
    assert!(message.contains("folow"), "{message}");
    let zero = format!(
        "CREATE SOURCE z (id INT) WITH (connector = 'file', path = '{d}/x.json', max_line_bytes = '0') FORMAT JSON"
    );
    assert_eq!(failure(&client, &zero).await.0, "22023");
    assert_eq!(failure(&client, "SELECT * FROM typo").await.0, "42P01");
    // Following, a glob may match nothing yet.
    client
        .batch_execute(&format!(
            "CREATE SOURCE later (id INT) WITH (connector = 'file', path = '{d}/*.jsonl', follow = 'true') FORMAT JSON"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn lines_over_max_line_bytes_are_bad_records() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.txt");
    let mut content = b"short\n".to_vec();
    content.extend(std::iter::repeat_n(b'x', 100_000));
    content.extend_from_slice(b"\nafter\n");
    write(&path, &content);
    client
        .batch_execute(&format!(
            "CREATE SOURCE long WITH (connector = 'file', path = '{}', max_line_bytes = '64') FORMAT RAW",
            path.display()
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT line FROM long").await,
        ["short", "after"]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT \"position\", length(raw_text) FROM runnel_catalog.source_errors WHERE source = 'long'"
        )
        .await,
        ["6|256"]
    );
}

/// A cursor over a follow-mode source: one reader across file changes.
struct Follower<'a> {
    client: &'a Client,
}

impl<'a> Follower<'a> {
    async fn open(client: &'a Client, query: &str) -> Follower<'a> {
        client
            .batch_execute(&format!("BEGIN; DECLARE c CURSOR FOR {query}"))
            .await
            .unwrap();
        Follower { client }
    }

    /// The next `n` rows; waits (bounded) until they arrive.
    async fn next(&self, n: usize) -> Vec<String> {
        rows(self.client, &format!("FETCH {n} FROM c")).await
    }
}

#[tokio::test]
async fn follow_picks_up_appends_whole_lines_and_new_files() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.log");
    write(&a, b"a1\na2\n");
    client
        .batch_execute(&format!(
            "CREATE SOURCE tail INCLUDE file WITH (connector = 'file', path = '{}/*.log',
               follow = 'true', poll_interval = '10ms') FORMAT RAW",
            dir.path().display()
        ))
        .await
        .unwrap();
    let follow = Follower::open(&client, "SELECT line, _file FROM tail").await;
    let (fa, fb) = (
        a.display().to_string(),
        dir.path().join("b.log").display().to_string(),
    );
    assert_eq!(
        follow.next(2).await,
        [format!("a1|{fa}"), format!("a2|{fa}")]
    );
    append(&a, b"a3\na4-par");
    assert_eq!(follow.next(1).await, [format!("a3|{fa}")]);
    // The partial line waits for the rest of it.
    append(&a, b"tial\n");
    assert_eq!(follow.next(1).await, [format!("a4-partial|{fa}")]);
    write(&dir.path().join("c.txt"), b"not matched\n");
    write(&dir.path().join("b.log"), b"b1\n");
    assert_eq!(follow.next(1).await, [format!("b1|{fb}")]);
    append(&a, b"a5\n");
    assert_eq!(follow.next(1).await, [format!("a5|{fa}")]);

    // A plain SELECT on a followed source ends at its LIMIT.
    let other = server.client().await;
    assert_eq!(
        rows(&other, "SELECT line FROM tail LIMIT 3").await,
        ["a1", "a2", "a3"]
    );
    let mut some = rows(&other, "SELECT line FROM tail WHERE line LIKE 'b%' LIMIT 1").await;
    some.extend(
        rows(
            &other,
            "SELECT upper(line) FROM tail WHERE line = 'a5' LIMIT 1",
        )
        .await,
    );
    assert_eq!(some, ["b1", "A5"]);
}

#[tokio::test]
async fn follow_survives_rotation_of_a_single_file() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    write(&log, b"l1\nl2\n");
    client
        .batch_execute(&format!(
            "CREATE SOURCE app WITH (connector = 'file', path = '{}',
               follow = 'true', poll_interval = '10ms') FORMAT RAW",
            log.display()
        ))
        .await
        .unwrap();
    let follow = Follower::open(&client, "SELECT line FROM app").await;
    assert_eq!(follow.next(2).await, ["l1", "l2"]);
    // logrotate's default: rename away, then a new file at the same path.
    append(&log, b"l3\nl4-unterminated");
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    write(&log, b"n1\n");
    assert_eq!(follow.next(3).await, ["l3", "l4-unterminated", "n1"]);
    // Nothing was read twice: the next row is the next line.
    append(&log, b"n2\n");
    assert_eq!(follow.next(1).await, ["n2"]);
}

#[tokio::test]
async fn follow_survives_rotation_inside_a_followed_directory() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rotated = dir.path().join("app.log.1");
    write(&log, b"l1\n");
    client
        .batch_execute(&format!(
            "CREATE SOURCE app WITH (connector = 'file', path = '{}',
               follow = 'true', poll_interval = '10ms') FORMAT RAW",
            dir.path().display()
        ))
        .await
        .unwrap();
    let follow = Follower::open(&client, "SELECT line FROM app").await;
    assert_eq!(follow.next(1).await, ["l1"]);
    // The rotated name still matches: it must go on where it was, not be
    // read again from the start.
    append(&log, b"l2\nl3-");
    fs::rename(&log, &rotated).unwrap();
    write(&log, b"n1\n");
    append(&rotated, b"late\n");
    let mut got = follow.next(3).await;
    got.sort();
    assert_eq!(got, ["l2", "l3-late", "n1"]);
    append(&log, b"n2\n");
    assert_eq!(follow.next(1).await, ["n2"]);
    append(&rotated, b"later\n");
    assert_eq!(follow.next(1).await, ["later"]);
}

#[tokio::test]
async fn follow_restarts_a_truncated_file_from_the_start() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.log");
    write(&log, b"x1\nx2\n");
    client
        .batch_execute(&format!(
            "CREATE SOURCE t INCLUDE offset WITH (connector = 'file', path = '{}',
               follow = 'true', poll_interval = '10ms') FORMAT RAW",
            log.display()
        ))
        .await
        .unwrap();
    let follow = Follower::open(&client, "SELECT line, _offset FROM t").await;
    assert_eq!(follow.next(2).await, ["x1|0", "x2|3"]);
    // copytruncate: the writer keeps its descriptor; the file is emptied.
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, b"y1\n");
    assert_eq!(follow.next(1).await, ["y1|0"]);
    append(&log, b"y2\n");
    assert_eq!(follow.next(1).await, ["y2|3"]);
}
