//! `TestServer`: the real `runnel` binary on a free loopback port, with its
//! own data directory and a captured stderr log.
//!
//! Every integration test talks to runnel through this: no in-process
//! shortcuts. It must not sleep-poll; the only wait is for the ready line the
//! server prints on stdout, and for the process to exit on `stop`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// How long the server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd server may take to drain before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const READY_PREFIX: &str = "runnel listening on ";

/// A running `runnel serve`; killed when dropped.
pub struct TestServer {
    child: Option<Child>,
    pid: u32,
    port: u16,
    data_dir: PathBuf,
    stderr_path: PathBuf,
    /// Holds the stderr log (and the data dir unless one was given).
    _scratch: TempDir,
}

impl TestServer {
    /// A server with a fresh data directory and default settings.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// A server with a fresh data directory and extra `serve` arguments,
    /// e.g. `&["--max-connections", "3"]`.
    pub fn start_with(args: &[&str]) -> TestServer {
        Self::spawn(None, args)
    }

    /// A server on an existing data directory (for restart tests); the
    /// caller keeps the directory alive.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> TestServer {
        Self::spawn(Some(data_dir), args)
    }

    /// Like [`TestServer::start_in`], with extra environment variables
    /// (fault injection: `RUNNEL_FAULTS`).
    pub fn start_in_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::spawn_env(Some(data_dir), args, env)
    }

    fn spawn(data_dir: Option<&Path>, args: &[&str]) -> TestServer {
        Self::spawn_env(data_dir, args, &[])
    }

    fn spawn_env(data_dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let scratch = tempfile::tempdir().expect("create a temp dir for the test server");
        let data_dir = match data_dir {
            Some(d) => d.to_path_buf(),
            None => scratch.path().join("data"),
        };
        let stderr_path = scratch.path().join("stderr.log");
        let stderr = File::create(&stderr_path).expect("create the server's stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .env_remove("RUNNEL_LISTEN")
            .env_remove("RUNNEL_DATA_DIR")
            .env_remove("RUNNEL_MAX_CONNECTIONS")
            .env_remove("RUNNEL_PASSWORD")
            .env_remove("RUNNEL_FAULTS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn the runnel binary");
        let pid = child.id();
        let stdout = child.stdout.take().expect("server stdout is piped");

        // A reader thread hands over the ready line, then keeps draining
        // stdout so the server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel::<Result<u16, String>>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut seen = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => {
                        let _ = tx.send(Err(format!("stdout closed; it said: {seen:?}")));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(format!("reading stdout: {e}")));
                        return;
                    }
                }
                if let Some(addr) = line.trim().strip_prefix(READY_PREFIX) {
                    let port = addr
                        .strip_prefix("127.0.0.1:")
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(|| format!("unexpected ready line {line:?}"));
                    let _ = tx.send(port);
                    break;
                }
                seen.push_str(&line);
            }
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });

        let mut server = TestServer {
            child: Some(child),
            pid,
            port: 0,
            data_dir,
            stderr_path,
            _scratch: scratch,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(port)) => server.port = port,
            Ok(Err(why)) => {
                let status = server.force_kill();
                panic!(
                    "runnel did not become ready ({why}); exit: {status:?}\n--- stderr ---\n{}",
                    server.stderr()
                );
            }
            Err(_) => {
                server.force_kill();
                panic!(
                    "runnel printed no {READY_PREFIX:?} line within {READY_TIMEOUT:?}\n--- stderr ---\n{}",
                    server.stderr()
                );
            }
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// libpq-style connection string for the default user and database.
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=runnel dbname=runnel",
            self.port
        )
    }

    /// tokio-postgres config for the default user and database, to adjust
    /// before connecting.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("runnel")
            .dbname("runnel");
        config
    }

    /// A connected client; its connection runs on a spawned task.
    pub async fn client(&self) -> Client {
        let config = self.config();
        self.connect(&config).await.unwrap_or_else(|e| {
            panic!(
                "connecting to runnel on port {}: {e}\n--- stderr ---\n{}",
                self.port,
                self.stderr()
            )
        })
    }

    /// Connects with `config`, returning the error instead of panicking.
    pub async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            // The connection ends with an error when the server goes away
            // mid-test (stop, kill9); the test sees that on the client.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Graceful shutdown: SIGTERM, wait up to 10 s, then SIGKILL. Returns
    /// how the process exited. Async so that client connection tasks keep
    /// running while the server drains.
    pub async fn stop(&mut self) -> ExitStatus {
        let Some(child) = self.child.take() else {
            panic!("server already stopped");
        };
        signal(self.pid, "-TERM");
        self.wait_for(child, "of SIGTERM; killed it").await
    }

    /// Waits up to the stop timeout for `child` to exit; kills it and
    /// panics with its stderr otherwise.
    async fn wait_for(&self, mut child: Child, after: &str) -> ExitStatus {
        let waiter = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(STOP_TIMEOUT, waiter).await {
            Ok(status) => status
                .expect("waiter thread")
                .expect("wait for the runnel process"),
            Err(_) => {
                signal(self.pid, "-KILL");
                panic!(
                    "runnel did not exit within {STOP_TIMEOUT:?} {after}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Waits for the process to exit by itself (an injected crash), up to
    /// the stop timeout.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let Some(child) = self.child.take() else {
            panic!("server already stopped");
        };
        self.wait_for(child, "by itself").await
    }

    /// SIGKILL: the process dies without any chance to clean up.
    pub fn kill9(&mut self) {
        self.force_kill();
    }

    fn force_kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.force_kill();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed: {status}");
}

/// The SQLSTATE of a database error, or a panic naming what came instead.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.code().code().to_string(),
        None => panic!("expected an error from the server, got: {e:?}"),
    }
}

/// Runs `sql` and returns the first column of every row as text.
pub async fn column(client: &Client, sql: &str) -> Vec<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

/// Command tags' row counts and the text of every row, in order.
pub fn summarize(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(format!("complete {n}")),
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// Fails the test unless the connection still answers a query.
pub async fn still_works(client: &Client) {
    let one: i32 = client
        .query_one("SELECT 1::int4", &[])
        .await
        .expect("connection unusable after an error")
        .get(0);
    assert_eq!(one, 1);
}
