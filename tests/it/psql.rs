//! The real `psql` client against runnel: queries, backslash commands that
//! read the PostgreSQL catalog, `\copy` both ways and FETCH_COUNT cursors.
//!
//! Data checks use unaligned tuples-only output (`-A -t`) so they compare
//! exact text; psql must be on PATH (scripts/test.sh installs it).

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::TestServer;

/// Runs psql with `args` after the connection options; returns the output.
fn psql_output(server: &TestServer, args: &[&str]) -> Output {
    Command::new("psql")
        .args(["-d", &server.connection_string(), "-X"])
        .args(["-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env("PGCONNECT_TIMEOUT", "30")
        .env("PGAPPNAME", "runnel-psql-test")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run psql (is postgresql-client installed? run scripts/test.sh)")
}

/// Runs psql and returns stdout, failing the test on a non-zero exit.
fn psql(server: &TestServer, args: &[&str]) -> String {
    let out = psql_output(server, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "psql {args:?} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server stderr ---\n{}",
        out.status,
        server.stderr()
    );
    stdout
}

/// Unaligned, tuples-only output of one command.
fn rows(server: &TestServer, command: &str) -> String {
    psql(server, &["-A", "-t", "-c", command])
}

fn setup(server: &TestServer) {
    psql(
        server,
        &[
            "-c",
            "CREATE TABLE t (id BIGINT, name TEXT, ts TIMESTAMP)",
            "-c",
            "INSERT INTO t VALUES (1, 'a', now()), (2, 'b', now()), (3, 'a', now())",
            "-c",
            "CREATE VIEW v AS SELECT id FROM t",
        ],
    );
}

#[tokio::test]
async fn queries_and_aligned_output() {
    let server = TestServer::start();
    setup(&server);
    assert_eq!(
        rows(
            &server,
            "SELECT name, count(*) FROM t GROUP BY name ORDER BY name"
        ),
        "a|2\nb|1\n"
    );
    assert_eq!(rows(&server, "SELECT id FROM v ORDER BY id"), "1\n2\n3\n");
    assert_eq!(
        rows(&server, "SELECT count(*) FROM t WHERE ts <= now()"),
        "3\n"
    );
    assert_eq!(
        psql(&server, &["-c", "SELECT 1 AS x, 'y' AS y"]),
        " x | y \n---+---\n 1 | y\n(1 row)\n\n"
    );
    // An error makes psql exit non-zero with the server's message.
    let out = psql_output(&server, &["-c", "SELECT * FROM missing"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR:"), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
}

#[tokio::test]
async fn describe_commands_list_objects() {
    let server = TestServer::start();
    setup(&server);
    let listed = rows(&server, "\\d");
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("public|t|table|")),
        "\\d: {listed}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("public|v|view|")),
        "\\d: {listed}"
    );

    let tables = rows(&server, "\\dt");
    assert!(
        tables.lines().any(|l| l.starts_with("public|t|table|")),
        "\\dt: {tables}"
    );
    assert!(!tables.contains("|v|"), "\\dt lists the view: {tables}");
    let views = rows(&server, "\\dv");
    assert!(
        views.lines().any(|l| l.starts_with("public|v|view|")),
        "\\dv: {views}"
    );
    assert!(!views.contains("|t|"), "\\dv lists the table: {views}");
    assert_eq!(rows(&server, "\\dm"), "", "no materialized views yet");

    let schemas = rows(&server, "\\dn");
    assert!(
        schemas.lines().any(|l| l.starts_with("public|")),
        "\\dn: {schemas}"
    );
    let databases = rows(&server, "\\l");
    assert!(
        databases.lines().any(|l| l.starts_with("runnel|")),
        "\\l: {databases}"
    );

    let columns = rows(&server, "\\d t");
    let columns: Vec<&str> = columns.lines().collect();
    assert!(columns.len() >= 3, "\\d t: {columns:?}");
    assert!(columns[0].starts_with("id|bigint|"), "\\d t: {columns:?}");
    assert!(columns[1].starts_with("name|text|"), "\\d t: {columns:?}");
    assert!(
        columns[2].starts_with("ts|timestamp without time zone|"),
        "\\d t: {columns:?}"
    );
    let view = rows(&server, "\\d v");
    assert!(
        view.lines().any(|l| l.starts_with("id|bigint|")),
        "\\d v: {view}"
    );
    let verbose = rows(&server, "\\d+ t");
    assert!(
        verbose.lines().any(|l| l.starts_with("id|bigint|")),
        "\\d+ t: {verbose}"
    );
    let verbose_view = psql(&server, &["-c", "\\d+ v"]);
    assert!(
        verbose_view.contains("View definition:") && verbose_view.contains("SELECT id FROM t"),
        "\\d+ v: {verbose_view}"
    );
}

#[tokio::test]
async fn describe_sources() {
    let server = TestServer::start();
    setup(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readings.json");
    std::fs::write(
        &file,
        "{\"sensor_id\": 1, \"ts\": \"2026-11-21 10:00:00\"}\n",
    )
    .unwrap();
    let file = path(&file);
    psql(
        &server,
        &[
            "-c",
            &format!(
                "CREATE SOURCE src (sensor_id INT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
                 WITH (connector = 'file', path = '{file}') FORMAT JSON"
            ),
        ],
    );

    // \d names each relation by its kind; the system tables are not listed.
    assert_eq!(
        rows(&server, "\\d"),
        "public|src|source|runnel\npublic|t|table|runnel\npublic|v|view|runnel\n"
    );
    assert_eq!(rows(&server, "\\dE"), "public|src|source|runnel\n");

    // psql titles relkind 'f' "Foreign table" itself; the rest is ours.
    let options = format!(
        "FDW options: (connector 'file', path '{file}', format 'json', \
         watermark 'ts - INTERVAL ''2'' SECOND')"
    );
    assert_eq!(
        psql(&server, &["-A", "-c", "\\d src"]),
        format!(
            "Foreign table \"public.src\"\n\
             Column|Type|Collation|Nullable|Default|FDW options\n\
             sensor_id|integer||||\n\
             ts|timestamp without time zone||not null||(watermark 'ts - INTERVAL ''2'' SECOND')\n\
             Server: file\n\
             {options}\n"
        )
    );
    let verbose = psql(&server, &["-A", "-c", "\\d+ src"]);
    let lines: Vec<&str> = verbose.lines().collect();
    assert_eq!(lines[0], "Foreign table \"public.src\"", "{verbose}");
    assert!(
        lines[1].starts_with("Column|Type|Collation|Nullable|Default|FDW options|Storage|"),
        "{verbose}"
    );
    assert!(lines[2].starts_with("sensor_id|integer||||"), "{verbose}");
    assert!(
        lines[3].starts_with(
            "ts|timestamp without time zone||not null||(watermark 'ts - INTERVAL ''2'' SECOND')|"
        ),
        "{verbose}"
    );
    assert_eq!(lines[4..], ["Server: file", options.as_str()], "{verbose}");

    // One foreign server per connector, all of the one wrapper.
    let servers = rows(&server, "\\des");
    assert!(servers.contains("file|runnel|runnel\n"), "\\des: {servers}");
    assert!(
        servers.contains("kafka|runnel|runnel\n"),
        "\\des: {servers}"
    );

    // The system tables, by schema.
    assert_eq!(
        rows(&server, "\\dt runnel_catalog.*"),
        "runnel_catalog|checkpoints|table|runnel\nrunnel_catalog|materialized_views|table|runnel\nrunnel_catalog|sinks|table|runnel\nrunnel_catalog|source_errors|table|runnel\nrunnel_catalog|sources|table|runnel\n"
    );
    let columns = rows(&server, "\\d runnel_catalog.sources");
    assert!(
        columns.starts_with("name|text||not null|\nconnector|text||not null|\n"),
        "{columns}"
    );
    assert!(
        columns.contains("watermark|timestamp without time zone|||\n"),
        "{columns}"
    );
    assert_eq!(
        rows(
            &server,
            "SELECT name, state, event_time FROM runnel_catalog.sources"
        ),
        "src|idle|ts - INTERVAL '2' SECOND\n"
    );
}

#[tokio::test]
async fn copy_from_files_and_to_a_file() {
    let server = TestServer::start();
    psql(
        &server,
        &["-c", "CREATE TABLE t (id BIGINT, name TEXT, ts TIMESTAMP)"],
    );
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(
        &csv,
        "1,alice,2024-01-02 03:04:05\n2,\"bob, jr\",2024-01-03 00:00:00\n3,,\n",
    )
    .unwrap();
    let text = dir.path().join("in.txt");
    std::fs::write(
        &text,
        "4\tcarol\t2024-02-01 12:00:00\n5\t\\N\t\\N\n6\ttab\\there\t2024-02-02 00:00:00\n",
    )
    .unwrap();
    let out_csv = dir.path().join("out.csv");

    let copied = psql(
        &server,
        &[
            "-c",
            &format!("\\copy t FROM '{}' WITH (FORMAT csv)", path(&csv)),
        ],
    );
    assert_eq!(copied, "COPY 3\n");
    let copied = psql(
        &server,
        &["-c", &format!("\\copy t FROM '{}'", path(&text))],
    );
    assert_eq!(copied, "COPY 3\n");

    assert_eq!(
        rows(&server, "SELECT id, name FROM t ORDER BY id"),
        "1|alice\n2|bob, jr\n3|\n4|carol\n5|\n6|tab\there\n"
    );
    // CSV reads an unquoted empty field as NULL, like PostgreSQL.
    assert_eq!(
        rows(&server, "SELECT count(*) FROM t WHERE name IS NULL"),
        "2\n"
    );

    let copied = psql(
        &server,
        &[
            "-c",
            &format!(
                "\\copy (SELECT id, name FROM t WHERE id <= 3 ORDER BY id) TO '{}' WITH (FORMAT csv)",
                path(&out_csv)
            ),
        ],
    );
    assert_eq!(copied, "COPY 3\n");
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap(),
        "1,alice\n2,\"bob, jr\"\n3,\n"
    );
    // Timestamps print as PostgreSQL prints them: no zero fraction.
    assert_eq!(
        rows(&server, "SELECT id, name, ts FROM t ORDER BY id"),
        "1|alice|2024-01-02 03:04:05\n\
         2|bob, jr|2024-01-03 00:00:00\n\
         3||\n\
         4|carol|2024-02-01 12:00:00\n\
         5||\n\
         6|tab\there|2024-02-02 00:00:00\n"
    );
}

#[tokio::test]
async fn fetch_count_uses_a_cursor() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fetch.sql");
    std::fs::write(
        &script,
        "CREATE TABLE f (v BIGINT);\n\
         INSERT INTO f VALUES (1), (2), (3), (4), (5);\n\
         \\set FETCH_COUNT 2\n\
         SELECT v FROM f ORDER BY v;\n\
         SELECT v * 10 FROM f ORDER BY v LIMIT 3;\n",
    )
    .unwrap();
    let out = psql(&server, &["-A", "-t", "-q", "-f", &path(&script)]);
    assert_eq!(out, "1\n2\n3\n4\n5\n10\n20\n30\n");
}

fn path(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}
