//! CREATE SINK into Parquet: files DuckDB and pyarrow read, Hive partition
//! directories, rollover, `AS query` sinks, reading the archive back in
//! runnel (the sink itself and CREATE EXTERNAL TABLE) next to live views,
//! commit failures that are retried without losing rows, `kill -9` while
//! writing, refused inputs and options, DROP / SHOW / `\d`.
//!
//! Time moves by the data's watermarks and FLUSH (which commits every open
//! file); nothing sleeps to wait for results.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{TestServer, column, sqlstate};
use crate::views::{COLUMNS, T0, append, line};

fn python() -> PathBuf {
    match std::env::var_os("RUNNEL_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"),
    }
}

/// Runs tests/python/parquet_sink_check.py: DuckDB and pyarrow read `dir`;
/// returns (rows, schema line, file count).
fn check_with_python(
    dir: &Path,
    select: &str,
    check: Option<&str>,
) -> (Vec<String>, String, usize) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/parquet_sink_check.py");
    let mut command = Command::new(python());
    command.arg(&script).arg(dir).arg(select);
    if let Some(c) = check {
        command.arg(c);
    }
    let out = command
        .output()
        .expect("run Python (scripts/test.sh makes the venv with duckdb and pyarrow)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "parquet_sink_check.py failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("row: ").map(str::to_string))
        .collect();
    let schema = stdout
        .lines()
        .find_map(|l| l.strip_prefix("schema: "))
        .unwrap_or_default()
        .to_string();
    let files = stdout
        .lines()
        .find_map(|l| l.strip_prefix("files: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (rows, schema, files)
}

/// Asserts two sorted row lists are equal, showing a few differences.
fn assert_same_rows(got: &[String], want: &[String], what: &str) {
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        panic!(
            "{what}: {} rows, expected {}; missing {missing:?}; unexpected {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// Rows of `sql` as `a|b|c` lines, sorted.
async fn rows(client: &Client, sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            out.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out.sort();
    out
}

/// Every visible Parquet file under `dir` (recursively), and the hidden
/// temporaries.
fn files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut visible = Vec::new();
    let mut hidden = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&d) else {
            continue;
        };
        for item in listing.flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
            } else if item.file_name().to_string_lossy().starts_with('.') {
                hidden.push(path);
            } else {
                visible.push(path);
            }
        }
    }
    visible.sort();
    (visible, hidden)
}

/// Reads a whole Parquet file (footer and every row group); the row count.
fn parquet_rows(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", path.display()))
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

async fn error_of(client: &Client, sql: &str) -> (String, String) {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} should fail"));
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    (sqlstate(&e), message)
}

/// A day and a half of readings from three sensors, one every 20 s.
fn readings() -> Vec<String> {
    (0..6_480)
        .map(|i| line(i as u32 % 3, 20.0 + (i % 17) as f64, T0 + i * 20_000_000))
        .collect()
}

#[tokio::test]
async fn a_windowed_view_sinks_to_partitioned_parquet_that_duckdb_and_pyarrow_read() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    append(&input, &readings());
    let archive = dir.path().join("archive/temps");
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE MATERIALIZED VIEW temps_5m AS SELECT window_start, window_end, sensor_id, \
                 count(*) AS n, avg(temperature) AS avg_t \
             FROM r GROUP BY TUMBLE(ts, INTERVAL '5' MINUTE), sensor_id; \
             CREATE SINK temps_archive FROM temps_5m \
             WITH (connector = 'parquet', path = '{}', partition_by = 'date(window_start)', \
                   rollover_rows = '100', rollover_interval = '1 minute', compression = 'zstd'); \
             FLUSH",
            input.display(),
            archive.display()
        ))
        .await
        .unwrap();
    // Timestamps are nanoseconds (DataFusion's TIMESTAMP); DuckDB prints µs.
    let select = "CAST(window_start AS BIGINT) / 1000, sensor_id, n, \
                  CAST(round(avg_t * 1000) AS BIGINT)";
    let view = rows(&client, &format!("SELECT {select} FROM temps_5m")).await;
    // 36 hours of 5-minute windows for 3 sensors.
    assert_eq!(view.len(), 36 * 12 * 3);
    let (read, schema, file_count) = check_with_python(
        &archive,
        "epoch_us(window_start), sensor_id, n, CAST(round(avg_t * 1000) AS BIGINT)",
        Some("SELECT count(*) FROM t WHERE CAST(window_start AS DATE) <> date"),
    );
    let mut read = read;
    read.sort();
    assert_same_rows(
        &read,
        &view,
        "DuckDB and pyarrow read exactly the view's rows",
    );
    assert_eq!(
        schema,
        "window_start:timestamp[ns],window_end:timestamp[ns],sensor_id:int32,n:int64,avg_t:double"
    );
    // Rollover by rows: no file has more than 100 rows, so there are many.
    assert!(file_count >= view.len() / 100, "{file_count} files");
    let (visible, _) = files(&archive);
    for f in &visible {
        assert!(parquet_rows(f) <= 100);
    }
    let mut days: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    days.sort();
    assert_eq!(days, ["date=2026-11-21", "date=2026-11-22"]);
    // The sink reads back as its archive, next to the live view.
    assert_same_rows(
        &rows(&client, &format!("SELECT {select} FROM temps_archive")).await,
        &view,
        "the sink read as a relation",
    );
    let figures = rows(
        &client,
        "SELECT state, rows_written, files_written >= 2, rows_buffered, last_commit IS NOT NULL, \
         last_error IS NULL, partition_by, input FROM runnel_catalog.sinks",
    )
    .await;
    assert_eq!(
        figures,
        [format!(
            "finished|{}|t|0|t|t|date = date(window_start)|temps_5m",
            view.len()
        )]
    );
    assert_eq!(
        column(&client, "SHOW SINKS").await,
        [Some("temps_archive".to_string())]
    );
}

#[tokio::test]
async fn a_query_sink_is_read_back_with_an_external_table_and_joined_with_a_live_view() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    append(&input, &readings()[..3_000]);
    let archive = dir.path().join("hot");
    let mut server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{0}', follow = 'true') FORMAT JSON; \
             CREATE SOURCE batch {COLUMNS} WITH (connector = 'file', path = '{0}') FORMAT JSON; \
             CREATE SINK hot AS SELECT sensor_id, temperature, ts FROM r WHERE temperature > 30 \
             WITH (connector = 'parquet', path = '{1}', rollover_rows = '200', compression = 'snappy'); \
             CREATE MATERIALIZED VIEW live AS SELECT window_start, sensor_id, max(temperature) AS hi \
             FROM r GROUP BY TUMBLE(ts, INTERVAL '1' HOUR), sensor_id; \
             FLUSH",
            input.display(),
            archive.display()
        ))
        .await
        .unwrap();
    // `batch` reads the same file to its current end.
    let hot = "SELECT sensor_id, temperature, CAST(ts AS BIGINT) FROM batch WHERE temperature > 30";
    let expected = rows(&client, hot).await;
    assert!(expected.len() > 400);
    assert_same_rows(
        &rows(
            &client,
            "SELECT sensor_id, temperature, CAST(ts AS BIGINT) FROM hot",
        )
        .await,
        &expected,
        "the sink read as a relation",
    );
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE history STORED AS PARQUET LOCATION '{}/'",
            archive.display()
        ))
        .await
        .unwrap();
    let count = |n: usize| vec![Some(n.to_string())];
    assert_eq!(
        column(&client, "SELECT count(*) FROM history").await,
        count(expected.len())
    );
    // More input: the next FLUSH commits it and the next query sees it.
    append(&input, &readings()[3_000..4_000]);
    client.batch_execute("FLUSH").await.unwrap();
    let expected = rows(&client, hot).await;
    assert_eq!(
        column(&client, "SELECT count(*) FROM history").await,
        count(expected.len())
    );
    let (visible, _) = files(&archive);
    assert!(visible.len() >= 3, "rollover by rows: {visible:?}");
    // History joined with a live view in one query.
    let join = |history: &str| {
        format!(
            "SELECT count(*), sum(l.hi) FROM {history} h JOIN live l \
             ON h.sensor_id = l.sensor_id AND date_bin(INTERVAL '1' HOUR, h.ts) = l.window_start"
        )
    };
    let joined = column(&client, &join("history")).await;
    assert_eq!(
        joined,
        column(
            &client,
            &join("(SELECT * FROM batch WHERE temperature > 30)")
        )
        .await
    );
    assert_ne!(joined, count(0));
    let (read, schema, _) =
        check_with_python(&archive, "sensor_id, temperature, epoch_us(ts)", None);
    assert_eq!(read.len(), expected.len());
    assert_eq!(
        schema,
        "sensor_id:int32,temperature:double,ts:timestamp[ns]"
    );
    assert_eq!(
        rows(
            &client,
            "SELECT name, input, state, rows_written FROM runnel_catalog.sinks"
        )
        .await,
        [format!("hot|query|running|{}", expected.len())]
    );

    // After a restart the sink and the external table are back. The sink
    // continues from the last checkpoint (docs/design/0008): its input was
    // read to the end before the stop, so nothing is written again and the
    // archive holds every row once.
    drop(client);
    server.stop().await;
    let server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        column(&client, "SELECT count(*) FROM history").await,
        count(expected.len())
    );
    assert_eq!(
        column(
            &client,
            "SELECT count(*) FROM (SELECT DISTINCT sensor_id, ts FROM history)"
        )
        .await,
        count(expected.len())
    );
    assert_eq!(
        column(&client, "SHOW SINKS").await,
        [Some("hot".to_string())]
    );
}

#[tokio::test]
async fn a_commit_that_fails_keeps_its_rows_retries_and_shows_in_the_system_table() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    append(&input, &[]);
    let archive = dir.path().join("by_sensor");
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE SINK s AS SELECT * FROM r \
             WITH (connector = 'parquet', path = '{}', partition_by = 'sensor_id AS sensor')",
            input.display(),
            archive.display()
        ))
        .await
        .unwrap();
    // A regular file where the directory of sensor 1 has to go: every
    // commit of that partition fails, like a full or read-only disk.
    std::fs::write(archive.join("sensor=1"), b"in the way").unwrap();
    append(&input, &readings()[..300]);
    let (state, message) = error_of(&client, "FLUSH").await;
    assert_eq!(state, "58030", "{message}");
    assert!(message.contains("sink \"s\""), "{message}");
    let figures = rows(
        &client,
        "SELECT state LIKE 'retrying: %', commit_errors > 0, last_error IS NOT NULL, \
         rows_written + rows_buffered FROM runnel_catalog.sinks",
    )
    .await;
    assert_eq!(figures, ["t|t|t|300"], "no row is dropped");
    // Whatever is visible meanwhile is whole.
    for f in files(&archive).0 {
        if f != archive.join("sensor=1") {
            parquet_rows(&f);
        }
    }
    std::fs::remove_file(archive.join("sensor=1")).unwrap();
    // A retry that had already started before the removal may still fail
    // (and fail this FLUSH); the next one cannot.
    if client.batch_execute("FLUSH").await.is_err() {
        client.batch_execute("FLUSH").await.unwrap();
    }
    assert_eq!(
        rows(
            &client,
            "SELECT state, rows_written, rows_buffered FROM runnel_catalog.sinks"
        )
        .await,
        ["running|300|0"]
    );
    let (visible, hidden) = files(&archive);
    assert!(hidden.is_empty(), "{hidden:?}");
    assert_eq!(visible.iter().map(|f| parquet_rows(f)).sum::<usize>(), 300);
    assert_eq!(
        column(&client, "SELECT count(*) FROM s WHERE sensor_id = 1").await,
        [Some("100".to_string())]
    );
}

#[tokio::test]
async fn a_server_killed_while_writing_leaves_only_whole_files() {
    let data = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE g (id BIGINT, v DOUBLE) WITH (connector = 'datagen', \
               datagen.rows.per.second = '50000', fields.id.kind = 'sequence'); \
             CREATE SINK gs AS SELECT * FROM g \
             WITH (connector = 'parquet', path = '{}', rollover_rows = '2000'); \
             FLUSH; FLUSH",
            archive.path().display()
        ))
        .await
        .unwrap();
    // Files are being committed continuously (every 5000 rows) when the
    // server dies.
    server.kill9();
    let (visible, _) = files(archive.path());
    assert!(!visible.is_empty());
    for f in &visible {
        assert!(f.extension().is_some_and(|e| e == "parquet"), "{f:?}");
        assert!(parquet_rows(f) > 0);
    }
    // The restarted sink (run 2) clears the unfinished temporaries of run
    // 1 (`.part-<id>-1-<seq>.parquet.tmp`).
    let server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client.batch_execute("FLUSH").await.unwrap();
    let (_, hidden) = files(archive.path());
    let of_run_1: Vec<_> = hidden
        .iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            name.split('-').nth(2) == Some("1")
        })
        .collect();
    assert!(of_run_1.is_empty(), "{of_run_1:?}");
}

#[tokio::test]
async fn updating_inputs_bad_options_and_drop_are_refused_or_done_with_sqlstates() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    append(&input, &readings()[..10]);
    let p = |name: &str| dir.path().join(name).display().to_string();
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE MATERIALIZED VIEW counts AS SELECT sensor_id, count(*) AS n FROM r GROUP BY sensor_id; \
             CREATE MATERIALIZED VIEW passed AS SELECT * FROM r WHERE temperature > 0",
            input.display()
        ))
        .await
        .unwrap();
    let cases = [
        (
            format!(
                "CREATE SINK s FROM counts WITH (connector = 'parquet', path = '{}')",
                p("a")
            ),
            "0A000",
            "updating",
        ),
        (
            format!(
                "CREATE SINK s AS SELECT sensor_id, count(*) FROM r GROUP BY sensor_id \
                 WITH (connector = 'parquet', path = '{}')",
                p("a")
            ),
            "0A000",
            "updating",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}', rollover = '1')",
                p("a")
            ),
            "22023",
            "valid options are: compression, connector, max_open_files, partition_by, path, \
             rollover_bytes, rollover_interval, rollover_rows",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}', compression = 'lz5')",
                p("a")
            ),
            "22023",
            "'zstd', 'snappy' or 'none'",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}', rollover_rows = '0')",
                p("a")
            ),
            "22023",
            "rollover_rows",
        ),
        (
            "CREATE SINK s FROM passed WITH (connector = 'parquet')".to_string(),
            "22023",
            "path",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'kafka', path = '{}')",
                p("a")
            ),
            "22023",
            "valid: parquet",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}', \
                 partition_by = 'sensor_id')",
                p("a")
            ),
            "22023",
            "AS sensor_id_part",
        ),
        (
            format!(
                "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}/x')",
                input.display()
            ),
            "58030",
            "cannot create the directory",
        ),
        (
            format!(
                "CREATE SINK s FROM nothing WITH (connector = 'parquet', path = '{}')",
                p("a")
            ),
            "42P01",
            "does not exist",
        ),
        (
            format!(
                "CREATE SINK r FROM passed WITH (connector = 'parquet', path = '{}')",
                p("a")
            ),
            "42P07",
            "already exists",
        ),
    ];
    for (sql, state, text) in cases {
        let (got, message) = error_of(&client, &sql).await;
        assert_eq!(got, state, "{sql}: {message}");
        assert!(message.contains(text), "{sql}: {message}");
    }
    client
        .batch_execute(&format!(
            "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}')",
            p("a")
        ))
        .await
        .unwrap();
    let (got, message) = error_of(
        &client,
        &format!(
            "CREATE SINK s2 FROM passed WITH (connector = 'parquet', path = '{}')",
            p("a")
        ),
    )
    .await;
    assert_eq!(
        (got.as_str(), message.contains("sink \"s\"")),
        ("22023", true),
        "{message}"
    );
    let (got, _) = error_of(&client, "DROP MATERIALIZED VIEW passed").await;
    assert_eq!(got, "2BP01");
    let (got, _) = error_of(&client, "DROP SINK nope").await;
    assert_eq!(got, "42704");
    client
        .batch_execute("DROP SINK IF EXISTS nope; DROP SINK s")
        .await
        .unwrap();
    assert!(column(&client, "SHOW SINKS").await.is_empty());
    assert!(
        column(&client, "SELECT name FROM runnel_catalog.sinks")
            .await
            .is_empty()
    );
    client
        .batch_execute(&format!(
            "CREATE SINK s FROM passed WITH (connector = 'parquet', path = '{}'); \
             DROP MATERIALIZED VIEW passed CASCADE",
            p("a")
        ))
        .await
        .unwrap();
    assert!(column(&client, "SHOW SINKS").await.is_empty());
}

#[tokio::test]
async fn psql_lists_sinks_as_their_own_kind() {
    let server = TestServer::start();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    append(&input, &readings()[..10]);
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}') FORMAT JSON; \
             CREATE SINK archive AS SELECT sensor_id, ts FROM r \
             WITH (connector = 'parquet', path = '{}')",
            input.display(),
            dir.path().join("archive").display()
        ))
        .await
        .unwrap();
    let psql = |command: &str| {
        let out = Command::new("psql")
            .args(["-d", &server.connection_string(), "-X", "-A", "-c", command])
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{command}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let listing = psql("\\d");
    assert!(listing.contains("public|archive|sink|runnel"), "{listing}");
    assert!(listing.contains("public|r|source|runnel"), "{listing}");
    // `\d archive`: the columns it writes and its options.
    let detail = psql("\\d archive");
    assert!(detail.contains("sensor_id|integer"), "{detail}");
    assert!(detail.contains("Server: parquet"), "{detail}");
    assert!(detail.contains("connector 'parquet'"), "{detail}");
}

#[tokio::test]
async fn a_clean_stop_commits_what_the_sink_holds() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.json");
    let out = dir.path().join("out");
    append(&input, &[]);
    let mut server = TestServer::start_in(data.path(), &[]);
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE r {COLUMNS} WITH (connector = 'file', path = '{}', follow = 'true') FORMAT JSON; \
             CREATE SINK hot WITH (connector = 'parquet', path = '{}', rollover_rows = '1000000') AS \
                 SELECT sensor_id, temperature, ts FROM r WHERE temperature > 20",
            input.display(),
            out.display()
        ))
        .await
        .unwrap();
    let lines = readings();
    append(&input, &lines);
    // No FLUSH and far below the rollover: nothing is committed yet. A clean
    // stop (SIGTERM) must make every row visible before the process exits.
    drop(client);
    server.stop().await;
    let (visible, hidden) = files(&out);
    assert!(hidden.is_empty(), "{hidden:?}");
    let written: usize = visible.iter().map(|f| parquet_rows(f)).sum();
    let expected = lines
        .iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["temperature"].as_f64().unwrap() > 20.0
        })
        .count();
    assert_eq!(
        written, expected,
        "a clean stop commits every row the sink held"
    );
}
