//! The PostgreSQL wire protocol as tokio-postgres speaks it: simple and
//! extended queries, type OIDs both ways, portals, SQLSTATEs, cancel,
//! connection limits and session settings.
//!
//! Text-format parameters are covered by the psycopg tests (tests/python);
//! tokio-postgres always sends parameters in binary.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures::{TryStreamExt, pin_mut};
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::harness::{TestServer, column, sqlstate, still_works, summarize};

#[tokio::test]
async fn simple_query_multi_statement_and_empty() {
    let server = TestServer::start();
    let client = server.client().await;
    let out = client
        .simple_query(
            "CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x'), (2, NULL); \
             SELECT a, b FROM t ORDER BY a",
        )
        .await
        .unwrap();
    assert_eq!(
        summarize(&out),
        ["complete 0", "complete 2", "1|x", "2|NULL", "complete 2"]
    );
    let SimpleQueryMessage::RowDescription(cols) = &out[2] else {
        panic!(
            "expected a RowDescription before the rows, got {:?}",
            out[2]
        );
    };
    let names: Vec<_> = cols.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["a", "b"]);

    for empty in ["", "   ", ";", "-- just a comment", "/* block */"] {
        let out = client.simple_query(empty).await.unwrap();
        assert_eq!(summarize(&out), ["complete 0"], "query {empty:?}");
    }
    let out = client.simple_query("SELECT 1; ; SELECT 2;").await.unwrap();
    assert_eq!(summarize(&out), ["1", "complete 1", "2", "complete 1"]);
}

#[tokio::test]
async fn result_type_oids_and_values() {
    let server = TestServer::start();
    let client = server.client().await;
    // (expression, accepted types, text as PostgreSQL prints it)
    let cases: &[(&str, &[Type], &str)] = &[
        ("1::int2", &[Type::INT2], "1"),
        ("2::int4", &[Type::INT4], "2"),
        ("3::int8", &[Type::INT8], "3"),
        ("1.5::float4", &[Type::FLOAT4], "1.5"),
        ("2.5::float8", &[Type::FLOAT8], "2.5"),
        ("12.34::numeric(10,2)", &[Type::NUMERIC], "12.34"),
        ("true", &[Type::BOOL], "t"),
        ("'hi'::text", &[Type::TEXT], "hi"),
        ("'hi'::varchar", &[Type::TEXT, Type::VARCHAR], "hi"),
        // '\x01ff'::bytea keeps the characters instead of decoding the hex
        // (sql/known_divergences); decode() builds the same bytes.
        ("decode('01ff', 'hex')", &[Type::BYTEA], "\\x01ff"),
        ("DATE '2024-01-02'", &[Type::DATE], "2024-01-02"),
        ("TIME '12:34:56'", &[Type::TIME], "12:34:56"),
        (
            "TIMESTAMP '2024-01-02 03:04:05'",
            &[Type::TIMESTAMP],
            "2024-01-02 03:04:05",
        ),
        (
            "'2024-01-02 03:04:05+00'::timestamptz",
            &[Type::TIMESTAMPTZ],
            "2024-01-02 03:04:05+00",
        ),
        ("INTERVAL '1 day'", &[Type::INTERVAL], "1 day"),
        ("ARRAY[1, 2, 3]", &[Type::INT8_ARRAY], "{1,2,3}"),
        ("ARRAY['a', 'b']", &[Type::TEXT_ARRAY], "{a,b}"),
        ("'{\"a\": 1}'::json", &[Type::JSON], "{\"a\": 1}"),
        ("'{\"a\": 1}'::jsonb", &[Type::JSONB], "{\"a\": 1}"),
    ];
    // Every mismatch is collected so one run shows them all.
    let mut problems = Vec::new();
    for (expr, types, text) in cases {
        let sql = format!("SELECT {expr} AS v");
        let stmt = match client.prepare(&sql).await {
            Ok(stmt) => stmt,
            Err(e) => {
                problems.push(format!("{sql}: {e}"));
                continue;
            }
        };
        let ty = stmt.columns()[0].type_();
        if ty.oid() == 0 || !types.contains(ty) {
            problems.push(format!(
                "{sql}: type {ty} (OID {}), want {types:?}",
                ty.oid()
            ));
        }
        let got = column(&client, &sql).await;
        if got != [Some(text.to_string())] {
            problems.push(format!("{sql}: text {got:?}, want {text:?}"));
        }
    }

    // PostgreSQL also allows duplicate output column names (`SELECT 1, 1`);
    // DataFusion requires unique ones, see sql/known_divergences.

    // The same values decoded from binary format.
    let values = [
        "1::int2",
        "2::int4",
        "3::int8",
        "1.5::float4",
        "2.5::float8",
        "true",
        "'hi'::text",
        "decode('01ff', 'hex')",
        "DATE '2024-01-02'",
        "TIME '12:34:56'",
        "TIMESTAMP '2024-01-02 03:04:05'",
        "'2024-01-02 03:04:05+00'::timestamptz",
        "ARRAY[1, 2, 3]",
        "ARRAY['a', 'b']",
        "NULL::int4",
        "NULL::text",
        "'{\"a\": [1, true]}'::json",
        "'{\"a\": [1, true]}'::jsonb",
    ];
    let select: Vec<String> = (values.iter().enumerate())
        .map(|(i, v)| format!("{v} AS c{i}"))
        .collect();
    let row = client
        .query_one(&format!("SELECT {}", select.join(", ")), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 1);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, i64>(2), 3);
    assert_eq!(row.get::<_, f32>(3), 1.5);
    assert_eq!(row.get::<_, f64>(4), 2.5);
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, String>(6), "hi");
    let bytes: Vec<u8> = row.get(7);
    if bytes != [1u8, 255] {
        problems.push(format!("binary bytea: {bytes:?}, want [1, 255]"));
    }
    let date = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
    assert_eq!(row.get::<_, NaiveDate>(8), date);
    let time = NaiveTime::from_hms_opt(12, 34, 56).unwrap();
    assert_eq!(row.get::<_, NaiveTime>(9), time);
    let ts = NaiveDateTime::new(date, NaiveTime::from_hms_opt(3, 4, 5).unwrap());
    assert_eq!(row.get::<_, NaiveDateTime>(10), ts);
    assert_eq!(row.get::<_, DateTime<Utc>>(11), ts.and_utc());
    assert_eq!(row.get::<_, Vec<i64>>(12), [1, 2, 3]);
    assert_eq!(row.get::<_, Vec<String>>(13), ["a", "b"]);
    assert_eq!(row.get::<_, Option<i32>>(14), None);
    assert_eq!(row.get::<_, Option<String>>(15), None);
    let json = serde_json::json!({"a": [1, true]});
    assert_eq!(row.get::<_, serde_json::Value>(16), json);
    assert_eq!(row.get::<_, serde_json::Value>(17), json);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn prepared_statements_with_binary_parameters() {
    let server = TestServer::start();
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE p (i INT, b BIGINT, f DOUBLE PRECISION, ok BOOLEAN, s TEXT, ts TIMESTAMP)",
        )
        .await
        .unwrap();

    let insert = client
        .prepare("INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    let types: Vec<_> = insert.params().to_vec();
    assert_eq!(
        types,
        [
            Type::INT4,
            Type::INT8,
            Type::FLOAT8,
            Type::BOOL,
            Type::TEXT,
            Type::TIMESTAMP
        ]
    );
    let base = NaiveDate::from_ymd_opt(2024, 5, 6)
        .unwrap()
        .and_hms_opt(7, 8, 9)
        .unwrap();
    // One named statement reused many times.
    for k in 0..50i32 {
        let s = if k % 10 == 0 {
            None
        } else {
            Some(format!("row {k}"))
        };
        let ts = base + chrono::Duration::seconds(k.into());
        let params: [&(dyn ToSql + Sync); 6] = [
            &k,
            &(i64::from(k) * 1_000_000_000_000),
            &(f64::from(k) / 4.0),
            &(k % 2 == 0),
            &s,
            &ts,
        ];
        assert_eq!(client.execute(&insert, &params).await.unwrap(), 1);
    }

    let select = client
        .prepare("SELECT i, b, f, ok, s, ts FROM p WHERE i = $1")
        .await
        .unwrap();
    assert_eq!(select.params(), [Type::INT4]);
    for k in [0i32, 7, 49] {
        let row = client.query_one(&select, &[&k]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), k);
        assert_eq!(row.get::<_, i64>(1), i64::from(k) * 1_000_000_000_000);
        assert_eq!(row.get::<_, f64>(2), f64::from(k) / 4.0);
        assert_eq!(row.get::<_, bool>(3), k % 2 == 0);
        let want = (k % 10 != 0).then(|| format!("row {k}"));
        assert_eq!(row.get::<_, Option<String>>(4), want);
        let ts = base + chrono::Duration::seconds(k.into());
        assert_eq!(row.get::<_, NaiveDateTime>(5), ts);
    }
    assert!(client.query(&select, &[&1000i32]).await.unwrap().is_empty());

    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM p WHERE s IS NULL AND b > $1",
            &[&-1i64],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 5);

    let null_param: bool = client
        .query_one("SELECT $1::text IS NULL", &[&None::<String>])
        .await
        .unwrap()
        .get(0);
    assert!(null_param);
    let echoed: String = client
        .query_one("SELECT $1::text || '!'", &[&"héllo"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(echoed, "héllo!");
}

#[tokio::test]
async fn portals_return_rows_in_pieces() {
    let server = TestServer::start();
    let mut client = server.client().await;
    client
        .batch_execute("CREATE TABLE n (v BIGINT); INSERT INTO n VALUES (1), (2), (3), (4), (5)")
        .await
        .unwrap();
    let stmt = client
        .prepare("SELECT v FROM n WHERE v >= $1 ORDER BY v")
        .await
        .unwrap();

    let rows = client.query_raw(&stmt, [2i64]).await.unwrap();
    pin_mut!(rows);
    let mut seen = Vec::new();
    while let Some(row) = rows.try_next().await.unwrap() {
        seen.push(row.get::<_, i64>(0));
    }
    assert_eq!(seen, [2, 3, 4, 5]);

    let tx = client.transaction().await.unwrap();
    let portal = tx.bind(&stmt, &[&1i64]).await.unwrap();
    let mut pieces = Vec::new();
    for _ in 0..5 {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        let values: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let done = values.is_empty();
        pieces.push(values);
        if done {
            break;
        }
    }
    assert_eq!(pieces, [vec![1, 2], vec![3, 4], vec![5], vec![]]);
    tx.commit().await.unwrap();
    still_works(&client).await;
}

#[tokio::test]
async fn errors_carry_sqlstate_and_keep_the_connection() {
    let server = TestServer::start();
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();

    // Positions as PostgreSQL reports them: 1-based, at the offending token
    // or one past the end of the input.
    let mut problems = Vec::new();
    for (sql, want) in [
        ("SELEC 1", 1),
        ("SELECT 1 FROM t WHERE a = = 1", 27),
        ("SELECT * FROM t WHERE", 22),
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        let position = match db.position() {
            Some(ErrorPosition::Original(p)) => Some(*p),
            _ => None,
        };
        if sqlstate(&e) != "42601" || position != Some(want) {
            problems.push(format!(
                "{sql}: {} at {position:?}, want 42601 at {want}: {}",
                sqlstate(&e),
                db.message()
            ));
        }
        still_works(&client).await;
    }

    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELECT no_such_column FROM t", "42703"),
        ("CREATE TABLE t (b INT)", "42P07"),
        ("SELECT 1 / 0", "22012"),
        ("SELECT 10 / (a - a) FROM t", "22012"),
        ("SELECT 'abc'::int", "22P02"),
        ("CREATE INDEX i ON t (a)", "0A000"),
    ];
    for (sql, code) in cases {
        // Simple protocol, then extended (where Parse may fail already).
        let simple = client.simple_query(sql).await.map(|_| ());
        still_works(&client).await;
        let extended = client.query(sql, &[]).await.map(|_| ());
        still_works(&client).await;
        for (protocol, result) in [("simple", simple), ("extended", extended)] {
            match result {
                Ok(()) => problems.push(format!("{protocol} {sql}: succeeded, want {code}")),
                Err(e) if sqlstate(&e) != code => problems.push(format!(
                    "{protocol} {sql}: {}, want {code}: {e}",
                    sqlstate(&e)
                )),
                Err(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A failing statement in the middle of a batch stops the batch.
    let e = client
        .simple_query("INSERT INTO t VALUES (3); SELECT * FROM missing; INSERT INTO t VALUES (4)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    let values = column(&client, "SELECT a FROM t ORDER BY a").await;
    assert_eq!(values, ["1", "2", "3"].map(|s| Some(s.to_string())));
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let server = TestServer::start();
    let client = server.client().await;
    let token = client.cancel_token();
    // Runs for many minutes in constant memory unless canceled.
    let query = client.simple_query("SELECT sum(value % 7) FROM generate_series(1, 1000000000000)");
    tokio::pin!(query);
    // A cancel that arrives before the server started the query is ignored
    // (as in PostgreSQL) and the protocol gives no "query started" signal, so
    // the cancel is repeated, at most 100 times, 100 ms apart. The pause only
    // paces the retries; no result depends on it.
    let mut result = None;
    for _ in 0..100 {
        tokio::select! {
            r = &mut query => { result = Some(r); break; }
            sent = token.cancel_query(NoTls) => {
                sent.expect("send CancelRequest");
                tokio::select! {
                    r = &mut query => { result = Some(r); break; }
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
    }
    let result = result.expect("query still running after 100 cancel requests");
    let e = result.expect_err("a canceled query must fail");
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    // A second cancel sent while the first one was taking effect may still
    // land on the next statement; one such retry is legitimate.
    for attempt in 0..2 {
        match client.query_one("SELECT 1::int4", &[]).await {
            Ok(row) => {
                assert_eq!(row.get::<_, i32>(0), 1);
                return;
            }
            Err(e) if attempt == 0 && sqlstate(&e) == "57014" => {}
            Err(e) => panic!("connection unusable after cancel: {e:?}"),
        }
    }
}

#[tokio::test]
async fn connection_limit_rejects_with_53300() {
    let server = TestServer::start_with(&["--max-connections", "2"]);
    let first = server.client().await;
    let second = server.client().await;
    let e = server
        .connect(&server.config())
        .await
        .expect_err("a third connection must be refused");
    assert_eq!(sqlstate(&e), "53300", "{e:?}");
    still_works(&first).await;
    still_works(&second).await;

    drop(first);
    // The server frees the slot when it sees the Terminate; until then it
    // may still refuse, so retry a bounded number of times.
    let mut last = None;
    for _ in 0..200 {
        match server.connect(&server.config()).await {
            Ok(client) => {
                still_works(&client).await;
                return;
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "53300", "{e:?}");
                last = Some(e);
            }
        }
    }
    panic!("slot never freed after closing a client: {last:?}");
}

#[tokio::test]
async fn session_settings_and_functions() {
    let server = TestServer::start();
    let mut config = server.config();
    config.application_name("from-startup");
    let client = server.connect(&config).await.unwrap();
    let one = |v: &str| vec![Some(v.to_string())];

    let show = |name: &'static str| {
        let client = &client;
        async move { column(client, &format!("SHOW {name}")).await }
    };
    assert_eq!(show("application_name").await, one("from-startup"));
    assert_eq!(
        column(&client, "SELECT current_setting('application_name')").await,
        one("from-startup")
    );
    client
        .batch_execute("SET application_name = 'wire-test'")
        .await
        .unwrap();
    assert_eq!(show("application_name").await, one("wire-test"));
    assert_eq!(
        column(&client, "SELECT current_setting('application_name')").await,
        one("wire-test")
    );
    client
        .batch_execute("RESET application_name")
        .await
        .unwrap();
    assert_eq!(show("application_name").await, one(""));
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    assert_eq!(show("timezone").await, one("UTC"));

    let version = show("server_version").await;
    assert!(
        version[0].as_deref().unwrap().starts_with("16."),
        "{version:?}"
    );
    let version = column(&client, "SELECT version()").await;
    let version = version[0].as_deref().unwrap();
    assert!(
        version.contains("runnel") && version.contains("PostgreSQL"),
        "{version}"
    );
    assert_eq!(
        column(&client, "SELECT current_schema()").await,
        one("public")
    );
    assert_eq!(
        column(&client, "SELECT current_database()").await,
        one("runnel")
    );
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pid > 0);

    let e = client
        .batch_execute("SET no_such_setting = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42704", "{e:?}");
    still_works(&client).await;

    client
        .batch_execute("SET application_name = 'x'; DISCARD ALL")
        .await
        .unwrap();
    assert_eq!(show("application_name").await, one(""));
}

#[tokio::test]
async fn transactions_cursors_and_copy() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let out = client
        .simple_query("BEGIN; CREATE TABLE c (v BIGINT); COMMIT; BEGIN; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(out.len(), 5, "{out:?}");
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO c SELECT value FROM generate_series(1, 5)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let fetched = client
        .simple_query(
            "BEGIN; DECLARE cur CURSOR FOR SELECT v FROM c ORDER BY v; \
             FETCH 2 FROM cur; FETCH 2 FROM cur; FETCH ALL FROM cur; CLOSE cur; COMMIT",
        )
        .await
        .unwrap();
    let rows: Vec<_> = summarize(&fetched)
        .into_iter()
        .filter(|s| !s.starts_with("complete"))
        .collect();
    assert_eq!(rows, ["1", "2", "3", "4", "5"]);

    let sink = client
        .copy_in("COPY c FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    pin_mut!(sink);
    futures::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"6\n7\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);

    let stream = client
        .copy_out("COPY (SELECT v FROM c WHERE v > 4 ORDER BY v) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"5\n6\n7\n");
}
