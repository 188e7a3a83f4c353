//! `runnel_catalog.sources` and `runnel_catalog.source_errors` over the wire:
//! their figures after reading a file source with bad lines, through the
//! simple and the extended protocol.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tokio_postgres::Client;

use crate::harness::{TestServer, summarize};

/// Three good readings and two bad lines, with where each line starts.
const LINES: [&str; 5] = [
    r#"{"sensor_id": 1, "ts": "2026-11-21 10:00:00"}"#,
    "this line is not json",
    r#"{"sensor_id": 2, "ts": "2026-11-21 10:00:07"}"#,
    r#"{"sensor_id": 3}"#,
    r#"{"sensor_id": 4, "ts": "2026-11-21 10:00:05"}"#,
];

fn write_readings(dir: &std::path::Path) -> (std::path::PathBuf, Vec<i64>) {
    let path = dir.join("readings.json");
    let mut text = String::new();
    let mut starts = Vec::new();
    for line in LINES {
        starts.push(text.len() as i64);
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, &text).unwrap();
    (path, starts)
}

async fn create(client: &Client, name: &str, path: &std::path::Path, extra: &str) {
    client
        .batch_execute(&format!(
            "CREATE SOURCE {name} (sensor_id INT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             WITH (connector = 'file', path = '{}'{extra}) FORMAT JSON",
            path.display()
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn source_figures_after_reading_a_file_with_bad_lines() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, starts) = write_readings(dir.path());
    let file_len = std::fs::metadata(&path).unwrap().len() as i64;
    create(&client, "readings", &path, "").await;

    // Before any reader: nothing read, no watermark, no positions.
    let before = client
        .simple_query(
            "SELECT state, readers, records_in, bytes_in, errors, watermark, positions, lag \
             FROM runnel_catalog.sources WHERE name = 'readings'",
        )
        .await
        .unwrap();
    assert_eq!(
        summarize(&before),
        ["idle|0|0|0|0|NULL|NULL|NULL", "complete 1"]
    );

    // A finite source read to its end.
    let ids: Vec<i32> = client
        .query("SELECT sensor_id FROM readings ORDER BY sensor_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 2, 4]);

    // Extended protocol, with a parameter.
    let row = client
        .query_one(
            "SELECT name, connector, format, state, readers, records_in, bytes_in, errors, \
             watermark, positions, lag, replayable, event_time_column, event_time, options \
             FROM runnel_catalog.sources WHERE name = $1",
            &[&"readings"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>("name"), "readings");
    assert_eq!(row.get::<_, &str>("connector"), "file");
    assert_eq!(row.get::<_, Option<&str>>("format"), Some("json"));
    assert_eq!(row.get::<_, &str>("state"), "finished");
    assert_eq!(row.get::<_, i32>("readers"), 0);
    assert_eq!(row.get::<_, i64>("records_in"), 3);
    assert_eq!(row.get::<_, i64>("bytes_in"), file_len);
    assert_eq!(row.get::<_, i64>("errors"), 2);
    // The end of a finite input is +infinity: NULL, with state 'finished'.
    assert_eq!(row.get::<_, Option<NaiveDateTime>>("watermark"), None);
    assert_eq!(
        row.get::<_, Option<&str>>("positions"),
        Some(format!("{}={file_len} (lag 0)", path.display()).as_str())
    );
    assert_eq!(row.get::<_, Option<i64>>("lag"), Some(0));
    assert!(row.get::<_, bool>("replayable"));
    assert_eq!(row.get::<_, Option<&str>>("event_time_column"), Some("ts"));
    assert_eq!(
        row.get::<_, Option<&str>>("event_time"),
        Some("ts - INTERVAL '2' SECOND")
    );
    assert_eq!(
        row.get::<_, &str>("options"),
        format!("connector = 'file', path = '{}'", path.display())
    );

    // Every bad line, in the order read, with where it starts and its bytes.
    let errors = client
        .query(
            "SELECT source, at, split, \"position\", error, raw, raw_text \
             FROM runnel_catalog.source_errors ORDER BY \"position\"",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let now = Utc::now();
    for (row, line) in errors.iter().zip([1, 3]) {
        assert_eq!(row.get::<_, &str>("source"), "readings");
        let at: DateTime<Utc> = row.get("at");
        assert!(
            at <= now && now - at < chrono::Duration::minutes(5),
            "error time {at} is not recent (now {now})"
        );
        assert_eq!(row.get::<_, String>("split"), path.display().to_string());
        assert_eq!(row.get::<_, i64>("position"), starts[line]);
        assert_eq!(row.get::<_, &[u8]>("raw"), LINES[line].as_bytes());
        assert_eq!(row.get::<_, &str>("raw_text"), LINES[line]);
        assert!(!row.get::<_, &str>("error").is_empty());
    }
    // The error says what was wrong with the record.
    let missing_ts: &str = errors[1].get("error");
    assert!(missing_ts.contains("ts"), "{missing_ts}");

    // The same through the simple protocol, as text.
    let simple = client
        .simple_query(
            "SELECT \"position\", encode(raw, 'hex'), raw_text FROM runnel_catalog.source_errors \
             WHERE source = 'readings' ORDER BY 1",
        )
        .await
        .unwrap();
    let hex = |s: &str| {
        s.bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("")
    };
    assert_eq!(
        summarize(&simple),
        [
            format!("{}|{}|{}", starts[1], hex(LINES[1]), LINES[1]),
            format!("{}|{}|{}", starts[3], hex(LINES[3]), LINES[3]),
            "complete 2".to_string(),
        ]
    );
}

#[tokio::test]
async fn watermark_of_a_running_source() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_readings(dir.path());
    create(&client, "live", &path, ", follow = 'true'").await;

    // A followed file never ends; LIMIT stops the reader once the three
    // good rows (one batch) have arrived, after their watermark was taken.
    let got = client
        .query("SELECT sensor_id FROM live LIMIT 3", &[])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);

    let row = client
        .query_one(
            "SELECT records_in, errors, watermark, state FROM runnel_catalog.sources \
             WHERE name = 'live'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("records_in"), 3);
    assert_eq!(row.get::<_, i64>("errors"), 2);
    // The largest ts (10:00:07) minus the two seconds of the expression.
    let want = NaiveDate::from_ymd_opt(2026, 11, 21)
        .unwrap()
        .and_hms_opt(10, 0, 5)
        .unwrap();
    assert_eq!(row.get::<_, Option<NaiveDateTime>>("watermark"), Some(want));
    // The reader is dropped with the statement; it may not be gone yet.
    let state: &str = row.get("state");
    assert!(state == "idle" || state == "running", "state {state}");

    // The system tables are not user relations: not in \d's list, and
    // neither is writing to them possible.
    let visible = client
        .simple_query(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             WHERE c.relname IN ('sources', 'source_errors', 'live') \
             AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1",
        )
        .await
        .unwrap();
    assert_eq!(summarize(&visible), ["live", "complete 1"]);
    assert!(
        client
            .simple_query("INSERT INTO runnel_catalog.sources (name) VALUES ('x')")
            .await
            .is_err()
    );
}
