//! The `tcp` connector: lines sent to a listening socket, the log-shipping
//! case (`nc 127.0.0.1 9999 < access.log`).
//!
//! The source owns the listener: [`Connector::activate`] binds it (at CREATE
//! a port in use fails the statement), and the accept loop and every
//! connection's task live in a [`Listening`] guard that closes the port and
//! every connection when the source is dropped. Each connection is a split
//! named by the peer's `ip:port`; its lines become records (in big chunks:
//! everything the socket has ready is cut into lines and decoded at once),
//! and its end flushes an unterminated last line and ends the split.
//!
//! Delivery. A socket cannot be replayed, so its input is fanned out to the
//! readers attached at the time (every query reading the source sees what
//! arrives while it reads). With no reader attached, connections are
//! accepted but not read: the bytes wait in the socket and TCP flow control
//! holds back the sender, so nothing is lost while no query reads. Rows a
//! reader had received but not yet returned when it stops (a LIMIT reached,
//! a query canceled) are gone, and a restart loses what was in flight: the
//! guarantee is at-most-once. A reader that is slow holds back every client.
//! For the same reason a checkpoint records no position for a tcp source
//! (`can_replay` is false; its splits never call `resume_at`): a reader
//! opened after a restart reads what arrives from then on.
//! Under `on_error = 'fail'` a bad record fails the reading queries and
//! closes the connection that sent it.
//!
//! This module must not keep anything that outlives its source: no detached
//! tasks, no global state.

use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use futures::FutureExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::file::{DEFAULT_MAX_LINE, Framed, LineFramer, MAX_MAX_LINE, Numbering, framed_rejects};
use super::options::{Options, invalid};
use super::runtime::{Downstream, Fanout, ReaderContext, SourceStats, SplitEvent, SplitWriter};
use super::{Connector, SourceSpec};
use crate::error::{Error, Result};

/// Bytes read from a connection at most per chunk.
const READ_BUFFER: usize = 128 * 1024;
/// Connections waiting in the kernel while the accept loop is busy.
const BACKLOG: u32 = 1024;
/// The longest pause after a failed accept (e.g. out of descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listening socket whose connections feed one source.
pub struct TcpConnector {
    host: String,
    /// 0 asks the system for a free port; see [`TcpConnector::local_addr`].
    port: u16,
    max_connections: Option<usize>,
    max_line: usize,
    /// The readers attached now; every connection sends to them.
    fanout: Arc<Fanout>,
    /// `None` until activated, or while the port could not be bound.
    listening: Mutex<Option<Listening>>,
}

/// The listening socket and the tasks serving it, for the life of the
/// source. Dropping it closes the port at once and, through the accept
/// loop's task set, every connection.
struct Listening {
    addr: SocketAddr,
    /// Shared with the accept loop, which polls it; emptied on drop so the
    /// port is free again before the dropping statement returns.
    socket: Arc<Mutex<Option<TcpListener>>>,
    accept: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.accept.abort();
        lock(&self.socket).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("local_addr", &self.local_addr())
            .field("max_connections", &self.max_connections)
            .field("max_line", &self.max_line)
            .finish()
    }
}

impl TcpConnector {
    pub fn configure(options: &mut Options) -> Result<Self> {
        let port = options.int("port", &[], 0, 65535)?.ok_or_else(|| {
            invalid("connector 'tcp' needs the option port (0 for any free port)".into())
        })?;
        let host = options
            .take("host", &[])
            .unwrap_or_else(|| "127.0.0.1".into());
        if host.trim().is_empty() {
            return Err(invalid("option host must not be empty".into()));
        }
        let max_connections = options
            .int("max_connections", &[], 1, 1 << 20)?
            .map(|n| n as usize);
        let max_line = options
            .int("max_line_bytes", &[], 1, MAX_MAX_LINE)?
            .map_or(DEFAULT_MAX_LINE, |n| n as usize);
        Ok(TcpConnector {
            host,
            port: port as u16,
            max_connections,
            max_line,
            fanout: Arc::new(Fanout::default()),
            listening: Mutex::new(None),
        })
    }

    /// The address the source listens on (with the real port when `port =
    /// '0'`); `None` when it does not listen.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.listening).as_ref().map(|l| l.addr)
    }

    /// Binds the port and starts accepting, unless already done.
    fn listen(&self, spec: &Arc<SourceSpec>, stats: &Arc<SourceStats>) -> Result<SocketAddr> {
        let mut state = lock(&self.listening);
        if let Some(l) = &*state {
            return Ok(l.addr);
        }
        let listener = self.bind()?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let socket = Arc::new(Mutex::new(Some(listener)));
        let serving = Serving {
            spec: spec.clone(),
            stats: stats.clone(),
            fanout: self.fanout.clone(),
            max_line: self.max_line,
        };
        let limit = self.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let accept = tokio::spawn(accept_loop(socket.clone(), serving, limit));
        tracing::info!(source = %spec.name, "listening on {addr}");
        *state = Some(Listening {
            addr,
            socket,
            accept,
        });
        Ok(addr)
    }

    fn bind(&self) -> Result<TcpListener> {
        let cannot = |why: String| {
            invalid(format!(
                "could not listen on {}:{}: {why}; choose another port, or port = '0' for any free one",
                self.host, self.port
            ))
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::internal!("tcp source bound outside the runtime"));
        }
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| cannot(format!("cannot resolve the host ({e})")))?;
        let mut last = String::from("the host has no address");
        for addr in addrs {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            let bound = socket.and_then(|s| {
                s.set_reuseaddr(true)?; // rebinding right after a restart, as servers do
                s.bind(addr)?;
                s.listen(BACKLOG)
            });
            match bound {
                Ok(listener) => return Ok(listener),
                Err(e) => last = e.to_string(),
            }
        }
        Err(cannot(last))
    }
}

#[async_trait]
impl Connector for TcpConnector {
    fn metadata_kinds(&self) -> Vec<(&'static str, DataType)> {
        vec![("peer", DataType::Utf8)]
    }

    fn can_replay(&self) -> bool {
        false
    }

    async fn activate(&self, spec: &Arc<SourceSpec>, stats: &Arc<SourceStats>) -> Result<()> {
        self.listen(spec, stats).map(|_| ())
    }

    fn start(&self, ctx: &mut ReaderContext) -> Result<()> {
        // A source that could not bind at startup tries again for each new
        // reader, so it recovers once the port is free.
        if let Err(e) = self.listen(&ctx.spec, &ctx.stats) {
            return Err(Error::Resources {
                sqlstate: "55000",
                message: format!("source \"{}\" is not listening: {e}", ctx.spec.name),
            });
        }
        self.fanout.attach(ctx.sender());
        // Connections come and go: there are no initial splits to wait for.
        let ready = ctx.ready_signal();
        ctx.spawn(async move { ready.send().await });
        Ok(())
    }
}

/// What every connection of a source needs.
#[derive(Clone)]
struct Serving {
    spec: Arc<SourceSpec>,
    stats: Arc<SourceStats>,
    fanout: Arc<Fanout>,
    max_line: usize,
}

fn poll_accept(
    socket: &Mutex<Option<TcpListener>>,
    cx: &mut Context<'_>,
) -> Poll<Option<std::io::Result<(TcpStream, SocketAddr)>>> {
    match &*lock(socket) {
        None => Poll::Ready(None),
        Some(listener) => listener.poll_accept(cx).map(Some),
    }
}

/// Accepts connections until the source is dropped. The connection tasks
/// are in a set owned by this task: aborting it ends them all.
async fn accept_loop(
    socket: Arc<Mutex<Option<TcpListener>>>,
    serving: Serving,
    limit: Option<Arc<Semaphore>>,
) {
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap, further clients wait in the kernel's backlog.
        let permit = match &limit {
            Some(s) => match s.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            None => None,
        };
        match poll_fn(|cx| poll_accept(&socket, cx)).await {
            None => return,
            Some(Ok((stream, peer))) => {
                backoff = Duration::from_millis(10);
                connections.spawn(serve(stream, peer, serving.clone(), permit));
            }
            Some(Err(e)) => {
                tracing::warn!(source = %serving.spec.name, "accepting a connection: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Serves one connection; a failure under `on_error = 'fail'` reaches
/// every reader.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    serving: Serving,
    permit: Option<OwnedSemaphorePermit>,
) {
    let id = peer.to_string();
    let fanout = serving.fanout.clone();
    let stats = serving.stats.clone();
    let connection = Connection {
        writer: SplitWriter::new(
            id.as_str(),
            serving.spec.clone(),
            serving.stats.clone(),
            Downstream::Fanout(serving.fanout.clone()),
        ),
        lines: LineFramer::new(serving.max_line, Numbering::LineNumber, false),
        peer: id.clone(),
        serving,
    };
    let outcome = connection.run(stream, permit).await;
    stats.remove_position(&id);
    if let Err(e) = outcome {
        tracing::warn!(peer = %id, "closing the connection: {e}");
        let (sqlstate, message) = (e.sqlstate(), e.to_string());
        fanout
            .send(|| {
                SplitEvent::Failed(Error::Data {
                    sqlstate,
                    message: message.clone(),
                })
            })
            .await;
    }
}

/// One client's connection: a split.
struct Connection {
    writer: SplitWriter,
    lines: LineFramer,
    /// The `peer` metadata value.
    peer: String,
    serving: Serving,
}

impl Connection {
    async fn run(
        mut self,
        mut stream: TcpStream,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<()> {
        let fanout = self.serving.fanout.clone();
        // Waits for a reader: until one comes, the connection is not read.
        self.writer.announce().await?;
        let mut buf = vec![0u8; READ_BUFFER];
        let stats = self.serving.stats.clone();
        loop {
            fanout.wait_for_reader().await;
            let answered = self.writer.answered_epoch();
            let (filled, open) = tokio::select! {
                biased;
                read = read_ready(&mut stream, &mut buf, &self.peer) => read,
                // Idle with nothing in the socket: a FLUSH need not wait.
                _ = stats.flush_wanted(answered) => {
                    self.writer.caught_up().await?;
                    continue;
                }
            };
            let framed = self.lines.feed(&buf[..filled]);
            self.send(framed).await?;
            if !open {
                break;
            }
            if filled < buf.len() {
                // The socket had nothing more ready.
                self.writer.caught_up().await?;
            }
        }
        drop(stream);
        drop(permit);
        let last = self.lines.finish();
        self.send(last).await?;
        // With no reader attached, none has heard of this split.
        if fanout.wait_for_reader().now_or_never().is_some() {
            self.writer.finish().await?;
        }
        Ok(())
    }

    async fn send(&mut self, framed: Framed) -> Result<()> {
        let Framed {
            mut records,
            too_long,
        } = framed;
        framed_rejects(&self.writer, too_long)?;
        if records.is_empty() {
            return Ok(());
        }
        if !self.serving.spec.metadata.is_empty() {
            let peer: ArrayRef = Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                self.peer.as_str(),
                records.len(),
            )));
            // `peer` is this connector's only metadata kind.
            records.metadata = vec![peer; self.serving.spec.metadata.len()];
        }
        self.writer.records(records).await
    }
}

/// Waits for data, then takes whatever else the socket has ready, up to
/// the buffer's size: big chunks under load, no waiting when quiet. Returns
/// the bytes read and whether the connection is still open (a reset counts
/// as a close: what arrived before it is kept).
async fn read_ready(stream: &mut TcpStream, buf: &mut [u8], peer: &str) -> (usize, bool) {
    let mut filled = match stream.read(buf).await {
        Ok(0) => return (0, false),
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(peer, "connection lost: {e}");
            return (0, false);
        }
    };
    while filled < buf.len() {
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return (filled, false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!(peer, "connection lost: {e}");
                return (filled, false);
            }
        }
    }
    (filled, true)
}
