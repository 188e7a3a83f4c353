//! The `tcp` connector over real sockets: several clients at once, access
//! log lines parsed in SQL, JSON lines with bad records between good ones,
//! disconnects mid-line, clients that send before any query reads
//! (backpressure), the connection cap, and DROP SOURCE closing the port.
//!
//! A TCP source never ends by itself: every query here has a LIMIT or reads
//! through a cursor, and every wait is bounded.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::file_source::{failure, rows, within};
use crate::harness::TestServer;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    probe.local_addr().expect("probe address").port()
}

async fn connect(port: u16) -> TcpStream {
    within(
        "connecting to the source",
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .expect("connect to the tcp source")
}

/// Connects, sends `data`, closes; returns the client's address.
async fn send(port: u16, data: &[u8]) -> SocketAddr {
    let mut stream = connect(port).await;
    let addr = stream.local_addr().unwrap();
    within("sending", stream.write_all(data)).await.unwrap();
    stream.shutdown().await.unwrap();
    addr
}

/// The method and status of a client's `n`th request.
fn request(n: usize) -> (&'static str, u16) {
    match n % 3 {
        0 => ("GET", 200),
        1 => ("POST", 404),
        _ => ("DELETE", 500),
    }
}

/// An access log line in the common log format.
fn access_line(client: usize, n: usize) -> String {
    let (method, status) = request(n);
    format!(
        "10.0.0.{client} - - [10/Oct/2025:13:55:{n:02} +0000] \"{method} /c{client}/{n} HTTP/1.1\" {status} {}",
        100 + n
    )
}

#[tokio::test]
async fn several_clients_at_once_and_access_logs_parsed_in_sql() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE access WITH (connector = 'tcp', port = '{port}') FORMAT RAW"
        ))
        .await
        .unwrap();
    let (clients, per_client) = (4, 25);
    let query = tokio::spawn(async move {
        rows(
            &client,
            &format!(
                "SELECT split_part(line, ' ', 1) AS ip,
                        (regexp_match(line, '\"([A-Z]+) '))[1] AS method,
                        split_part(line, ' ', 7) AS path,
                        regexp_replace(line, '^.*\" ([0-9]{{3}}) [0-9]+$', '\\1') AS status
                 FROM access LIMIT {}",
                clients * per_client
            ),
        )
        .await
    });
    // Every client is connected before any sends; lines go out interleaved.
    let mut streams = Vec::new();
    for _ in 0..clients {
        streams.push(connect(port).await);
    }
    for n in 0..per_client {
        for (c, s) in streams.iter_mut().enumerate() {
            let line = format!("{}\n", access_line(c + 1, n));
            within("sending", s.write_all(line.as_bytes()))
                .await
                .unwrap();
        }
    }
    drop(streams);
    // DataFusion may spread the function calls over partitions, so the
    // rows are compared as a set (order is checked where the plan keeps it).
    let mut got = within("the query", query).await.unwrap();
    got.sort();
    let mut expected: Vec<String> = (1..=clients)
        .flat_map(|c| {
            (0..per_client).map(move |n| {
                let (method, status) = request(n);
                format!("10.0.0.{c}|{method}|/c{c}/{n}|{status}")
            })
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn json_lines_skip_bad_records_and_carry_the_peer() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id INT, name TEXT) INCLUDE peer
               WITH (connector = 'tcp', port = '{port}', max_line_bytes = '64') FORMAT JSON"
        ))
        .await
        .unwrap();
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"id\": 1, \"name\": \"a\"}\n");
    data.extend_from_slice(b"not json\n");
    data.extend_from_slice(b"{\"id\": \"two\"}\n");
    data.extend_from_slice(b"{\"id\": 3, \"name\": \"c\"}\r\n");
    data.extend_from_slice(
        format!("{{\"id\": 4, \"name\": \"{}\"}}\n", "d".repeat(100)).as_bytes(),
    );
    data.extend_from_slice(b"{\"id\": 5, \"name\": \"\xff\"}\n");
    data.extend_from_slice(b"\n{\"id\": 6, \"name\": \"f\"}\n");
    // The last line has no newline: the close completes it.
    data.extend_from_slice(b"{\"id\": 7, \"name\": \"g\"}");
    let peer = send(port, &data).await.to_string();
    assert_eq!(
        rows(&client, "SELECT id, name, _peer FROM ev LIMIT 4").await,
        [
            format!("1|a|{peer}"),
            format!("3|c|{peer}"),
            format!("6|f|{peer}"),
            format!("7|g|{peer}"),
        ]
    );
    // Bad records are logged by line number on their connection.
    assert_eq!(
        rows(
            &client,
            "SELECT split, \"position\" FROM runnel_catalog.source_errors \
             WHERE source = 'ev' ORDER BY \"position\""
        )
        .await,
        [2, 3, 5, 6].map(|n| format!("{peer}|{n}"))
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_line_ends_its_split_with_that_line() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE raw WITH (connector = 'tcp', port = '{port}') FORMAT RAW;
             BEGIN; DECLARE c CURSOR FOR SELECT line FROM raw"
        ))
        .await
        .unwrap();
    let mut stream = connect(port).await;
    stream
        .write_all(b"first\nsecond\nthird, cut sh")
        .await
        .unwrap();
    assert_eq!(rows(&client, "FETCH 2 FROM c").await, ["first", "second"]);
    drop(stream);
    assert_eq!(rows(&client, "FETCH 1 FROM c").await, ["third, cut sh"]);
    // The source goes on: a new client is a new split.
    send(port, b"fourth\n").await;
    assert_eq!(rows(&client, "FETCH 1 FROM c").await, ["fourth"]);
}

#[tokio::test]
async fn data_sent_before_any_query_reads_waits_in_the_socket() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE early WITH (connector = 'tcp', port = '{port}') FORMAT RAW"
        ))
        .await
        .unwrap();
    // Far more than the socket buffers hold: with no reader the sender is
    // held back by TCP flow control until a query reads.
    let lines = 200_000;
    let mut stream = connect(port).await;
    within("sending the first lines", stream.write_all(b"0\n1\n2\n"))
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut data = String::new();
        for n in 3..lines {
            data.push_str(&format!("{n}\n"));
        }
        stream.write_all(data.as_bytes()).await?;
        stream.shutdown().await
    });
    // A computed column too: rows of a live source keep arrival order.
    let got = rows(
        &client,
        &format!("SELECT trim(line) FROM early WHERE line <> '' LIMIT {lines}"),
    )
    .await;
    let expected: Vec<String> = (0..lines).map(|n| n.to_string()).collect();
    if let Some(i) = (0..lines).find(|&i| got.get(i) != expected.get(i)) {
        panic!(
            "lines lost or out of order: {} rows; row {i} is {:?}, expected {:?}; around it: {:?}",
            got.len(),
            got.get(i),
            expected[i],
            &got[i.saturating_sub(3)..(i + 3).min(got.len())]
        );
    }
    within("the writer", writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn max_connections_keeps_extra_clients_waiting_not_lost() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE capped WITH (connector = 'tcp', port = '{port}', max_connections = '1') FORMAT RAW"
        ))
        .await
        .unwrap();
    let mut first = connect(port).await;
    first.write_all(b"a1\n").await.unwrap();
    // Waits in the backlog until the first connection ends.
    let mut second = connect(port).await;
    second.write_all(b"b1\n").await.unwrap();
    second.shutdown().await.unwrap();
    first.write_all(b"a2\n").await.unwrap();
    first.shutdown().await.unwrap();
    assert_eq!(
        rows(&client, "SELECT line FROM capped LIMIT 3").await,
        ["a1", "a2", "b1"]
    );
}

#[tokio::test]
async fn on_error_fail_fails_the_query() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE strict (id INT) WITH (connector = 'tcp', port = '{port}', on_error = 'fail') FORMAT JSON"
        ))
        .await
        .unwrap();
    let peer = send(port, b"{\"id\": 1}\n{\"id\": nope}\n{\"id\": 3}\n").await;
    let (state, message) = failure(&client, "SELECT id FROM strict").await;
    assert_eq!(state, "22P02", "{message}");
    assert!(
        message.contains(&format!("{peer} at position 2")),
        "{message}"
    );
}

#[tokio::test]
async fn drop_source_closes_the_port_and_its_connections() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    let create = format!("CREATE SOURCE logs WITH (connector = 'tcp', port = '{port}') FORMAT RAW");
    client.batch_execute(&create).await.unwrap();
    let mut open = connect(port).await;
    open.write_all(b"never read\n").await.unwrap();
    client.batch_execute("DROP SOURCE logs").await.unwrap();
    let mut buf = [0u8; 16];
    let read = within("the server closing the connection", open.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection still open after DROP SOURCE: {read:?}"
    );
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "the port still accepts after DROP SOURCE");
    // The port is free for a new source at once.
    client.batch_execute(&create).await.unwrap();
    send(port, b"again\n").await;
    assert_eq!(
        rows(&client, "SELECT line FROM logs LIMIT 1").await,
        ["again"]
    );
}

#[tokio::test]
async fn create_refuses_a_port_in_use_and_bad_options() {
    let server = TestServer::start();
    let client = server.client().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (state, message) = failure(
        &client,
        &format!("CREATE SOURCE busy WITH (connector = 'tcp', port = '{port}') FORMAT RAW"),
    )
    .await;
    assert_eq!(state, "22023", "{message}");
    assert!(message.contains(&port.to_string()), "{message}");
    assert_eq!(failure(&client, "SELECT * FROM busy").await.0, "42P01");
    for options in [
        "connector = 'tcp'",
        "connector = 'tcp', port = '70000'",
        "connector = 'tcp', port = 'http'",
        "connector = 'tcp', port = '0', host = ''",
        "connector = 'tcp', port = '0', max_line_bytes = '0'",
        "connector = 'tcp', port = '0', max_connections = '0'",
        "connector = 'tcp', port = '0', prot = '1'",
    ] {
        let sql = format!("CREATE SOURCE bad WITH ({options}) FORMAT RAW");
        assert_eq!(failure(&client, &sql).await.0, "22023", "{sql}");
    }
    // Port 0: the system picks a free port.
    client
        .batch_execute("CREATE SOURCE anywhere WITH (connector = 'tcp', port = '0') FORMAT RAW")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_port_taken_at_restart_fails_the_source_until_it_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut server = TestServer::start_in(dir.path(), &[]);
        let client = server.client().await;
        client
            .batch_execute(&format!(
                "CREATE SOURCE logs WITH (connector = 'tcp', port = '{port}') FORMAT RAW"
            ))
            .await
            .unwrap();
        server.stop().await;
    }
    let taken = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    // The database opens anyway; the source says why it cannot run.
    let server = TestServer::start_in(dir.path(), &[]);
    let client = server.client().await;
    let state = rows(
        &client,
        "SELECT state FROM runnel_catalog.sources WHERE name = 'logs'",
    )
    .await;
    assert!(
        state.len() == 1 && state[0].starts_with("failed") && state[0].contains(&port.to_string()),
        "{state:?}"
    );
    let (code, message) = failure(&client, "SELECT line FROM logs LIMIT 1").await;
    assert_eq!(code, "55000", "{message}");
    // Once the port is free, the next reader binds it.
    drop(taken);
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT line FROM logs")
        .await
        .unwrap();
    send(port, b"back\n").await;
    assert_eq!(rows(&client, "FETCH 1 FROM c").await, ["back"]);
}

#[tokio::test]
async fn a_materialized_view_over_a_socket_is_current_after_flush() {
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id INT, ts TIMESTAMP, WATERMARK FOR ts AS ts)
               WITH (connector = 'tcp', port = '{port}') FORMAT JSON;
             CREATE MATERIALIZED VIEW per_second AS
               SELECT window_start, count(*) AS n FROM ev
               GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)"
        ))
        .await
        .unwrap();
    // The client stays connected: FLUSH must not wait for it to close.
    let mut stream = connect(port).await;
    let mut data = String::new();
    for (id, ts) in [
        (1, "00.1"),
        (2, "00.5"),
        (3, "00.9"),
        (4, "01.2"),
        (5, "03.0"),
    ] {
        data.push_str(&format!(
            "{{\"id\": {id}, \"ts\": \"2026-01-01T00:00:{ts}\"}}\n"
        ));
    }
    stream.write_all(data.as_bytes()).await.unwrap();
    within("FLUSH", client.batch_execute("FLUSH"))
        .await
        .unwrap();
    assert_eq!(
        rows(
            &client,
            "SELECT window_start, n FROM per_second ORDER BY window_start"
        )
        .await,
        ["2026-01-01 00:00:00|3", "2026-01-01 00:00:01|1"]
    );
}

#[tokio::test]
async fn two_readers_both_see_what_arrives_while_they_read() {
    let server = TestServer::start();
    let (a, b) = (server.client().await, server.client().await);
    let port = free_port();
    a.batch_execute(&format!(
        "CREATE SOURCE shared WITH (connector = 'tcp', port = '{port}') FORMAT RAW;
         BEGIN; DECLARE c CURSOR FOR SELECT line FROM shared"
    ))
    .await
    .unwrap();
    let mut stream = connect(port).await;
    stream.write_all(b"only a\n").await.unwrap();
    assert_eq!(rows(&a, "FETCH 1 FROM c").await, ["only a"]);
    b.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT line FROM shared")
        .await
        .unwrap();
    // Once both readers are attached (the catalog counts them), a line
    // reaches both.
    within("the second reader to attach", async {
        while rows(
            &a,
            "SELECT readers FROM runnel_catalog.sources WHERE name = 'shared'",
        )
        .await
            != ["2"]
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    stream.write_all(b"both\n").await.unwrap();
    assert_eq!(rows(&a, "FETCH 1 FROM c").await, ["both"]);
    assert_eq!(rows(&b, "FETCH 1 FROM c").await, ["both"]);
}

#[tokio::test]
async fn nc_can_ship_lines_when_installed() {
    let Some(nc) = ["nc", "ncat", "netcat"].into_iter().find(|nc| {
        Command::new(nc)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }) else {
        eprintln!("skipping: no nc, ncat or netcat on this machine");
        return;
    };
    let server = TestServer::start();
    let client = server.client().await;
    let port = free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE shipped WITH (connector = 'tcp', port = '{port}') FORMAT RAW"
        ))
        .await
        .unwrap();
    let mut child = Command::new(nc)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start nc");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("nc stdin");
        stdin.write_all(b"GET /a 200\nPOST /b 500\n").unwrap();
    }
    let got = rows(&client, "SELECT line FROM shipped LIMIT 2").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, ["GET /a 200", "POST /b 500"]);
}
