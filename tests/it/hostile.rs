//! Malformed and malicious wire traffic: random bytes, garbage after a valid
//! startup, huge declared lengths, unknown message types, bogus cancel
//! requests. None of it may disturb a well-behaved client running at the
//! same time, and the server must still accept new connections afterwards.
//!
//! Every hostile connection ends by closing its write side; the server must
//! then close the connection (the read sees EOF or a reset) within a bound.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestServer;

/// Upper bound for the server to hang up after the client stopped sending.
const HANGUP_BOUND: Duration = Duration::from_secs(30);
const PROTOCOL_3_0: i32 = 196_608;

fn startup_message() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for s in ["user", "runnel", "database", "runnel", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// A typed frontend message with a correct length header.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind];
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(body);
    msg
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to runnel")
}

/// Completes the startup handshake: reads backend messages until
/// ReadyForQuery.
async fn handshake(port: u16) -> TcpStream {
    let mut stream = connect(port).await;
    stream.write_all(&startup_message()).await.unwrap();
    let read = async {
        loop {
            let kind = stream.read_u8().await.expect("read message type");
            let len = stream.read_i32().await.expect("read message length");
            assert!((4..1 << 20).contains(&len), "backend length {len}");
            let mut body = vec![0; len as usize - 4];
            stream.read_exact(&mut body).await.expect("read body");
            assert_ne!(kind, b'E', "startup refused: {body:?}");
            if kind == b'Z' {
                break;
            }
        }
    };
    tokio::time::timeout(HANGUP_BOUND, read)
        .await
        .expect("no ReadyForQuery after a valid startup message");
    stream
}

/// Sends `bytes`, closes the write side and waits for the server to hang up.
async fn send_and_expect_hangup(mut stream: TcpStream, bytes: &[u8], what: &str) {
    // The server may close the connection while we are still writing.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(HANGUP_BOUND, drain)
        .await
        .unwrap_or_else(|_| panic!("server kept the connection open after {what}"));
}

async fn random_bytes(port: u16, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..20 {
        let len = rng.random_range(1..4096);
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        let stream = connect(port).await;
        send_and_expect_hangup(stream, &bytes, &format!("random bytes (round {round})")).await;
    }
}

async fn garbage_after_startup(port: u16, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = [
        b'Q', b'P', b'B', b'E', b'D', b'C', b'S', b'H', b'F', b'p', b'd', b'c',
    ];
    for round in 0..30 {
        let stream = handshake(port).await;
        let kind = kinds[rng.random_range(0..kinds.len())];
        let mut body = vec![0u8; rng.random_range(0..256)];
        rng.fill(&mut body[..]);
        let mut bytes = message(kind, &body);
        if round % 2 == 0 {
            // Truncated: the header promises more than ever arrives.
            let cut = rng.random_range(1..bytes.len().max(2));
            bytes.truncate(cut);
        }
        let what = format!("garbage {:?} message (round {round})", kind as char);
        send_and_expect_hangup(stream, &bytes, &what).await;
    }
}

async fn huge_lengths(port: u16) {
    let gib = 1i32 << 30;
    // A startup packet claiming 1 GiB.
    let mut bytes = gib.to_be_bytes().to_vec();
    bytes.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    send_and_expect_hangup(connect(port).await, &bytes, "a 1 GiB startup packet").await;
    // A query claiming 1 GiB, and one claiming a negative length.
    for len in [gib, i32::MAX, -5] {
        let mut bytes = vec![b'Q'];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(b"SELECT 1\0");
        let what = format!("a query message of length {len}");
        send_and_expect_hangup(handshake(port).await, &bytes, &what).await;
    }
}

async fn unknown_and_odd_messages(port: u16, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for kind in [b'Y', b'!', 0u8, 0xff] {
        let bytes = message(kind, b"whatever");
        let what = format!("unknown message type {kind}");
        send_and_expect_hangup(handshake(port).await, &bytes, &what).await;
    }
    // A CancelRequest for a backend that does not exist.
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80_877_102i32.to_be_bytes());
    cancel.extend_from_slice(&rng.random::<i32>().to_be_bytes());
    cancel.extend_from_slice(&rng.random::<i32>().to_be_bytes());
    send_and_expect_hangup(connect(port).await, &cancel, "a bogus CancelRequest").await;
    // An SSLRequest, then garbage instead of a startup message.
    let mut ssl = 8i32.to_be_bytes().to_vec();
    ssl.extend_from_slice(&80_877_103i32.to_be_bytes());
    let mut tail = vec![0u8; 100];
    rng.fill(&mut tail[..]);
    ssl.extend_from_slice(&tail);
    send_and_expect_hangup(connect(port).await, &ssl, "garbage after an SSLRequest").await;
    // A simple query followed by a Terminate is polite, not hostile: the
    // connection must close cleanly.
    let mut polite = message(b'Q', b"SELECT 1\0");
    polite.extend_from_slice(&message(b'X', b""));
    send_and_expect_hangup(handshake(port).await, &polite, "Query + Terminate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_does_not_disturb_good_clients() {
    let server = TestServer::start();
    let port = server.port();
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE good (k BIGINT, v BIGINT)")
        .await
        .unwrap();

    let good = tokio::spawn(async move {
        let insert = client
            .prepare("INSERT INTO good VALUES ($1, $2)")
            .await
            .unwrap();
        let read = client
            .prepare("SELECT count(*), sum(k) FROM good WHERE v > $1")
            .await
            .unwrap();
        for k in 1..=150i64 {
            client.execute(&insert, &[&k, &(k % 3)]).await.unwrap();
            let row = client.query_one(&read, &[&-1i64]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), k);
            assert_eq!(row.get::<_, i64>(1), k * (k + 1) / 2);
        }
    });
    let hostile = async {
        tokio::join!(
            random_bytes(port, 1),
            garbage_after_startup(port, 2),
            huge_lengths(port),
            unknown_and_odd_messages(port, 3),
        )
    };
    let ((), (), (), ()) = hostile.await;
    good.await.expect("the well-behaved client failed");

    let fresh = server.client().await;
    let row = fresh
        .query_one("SELECT count(*) FROM good", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 150);
}
