//! Noticing that a client has gone while its statement runs. A live result
//! (a continuous SELECT, SUBSCRIBE) may write nothing for a long time, and
//! without a write nothing else would find the socket closed: the statement,
//! and whatever it holds, would outlive its client.
//!
//! The watch is a second descriptor of the connection's socket that is only
//! polled for the peer's end of stream (EPOLLRDHUP / HUP), never read or
//! written, so pgwire's reading of the same socket is untouched.

use std::future::pending;

use tokio::io::Interest;

/// Waits for a connection's client to close its side of the socket.
pub struct PeerWatch {
    /// `None` where the socket cannot be watched (not unix, or the
    /// descriptor could not be duplicated): only writes notice then.
    socket: Option<tokio::net::TcpStream>,
}

impl PeerWatch {
    pub fn new(socket: &tokio::net::TcpStream) -> Self {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let dup = socket
                .as_fd()
                .try_clone_to_owned()
                .map(std::net::TcpStream::from)
                .and_then(|dup| {
                    dup.set_nonblocking(true)?;
                    tokio::net::TcpStream::from_std(dup)
                });
            if let Err(e) = &dup {
                tracing::debug!(error = %e, "cannot watch the client's socket for a hangup");
            }
            PeerWatch { socket: dup.ok() }
        }
        #[cfg(not(unix))]
        {
            let _ = socket;
            PeerWatch { socket: None }
        }
    }

    /// Resolves once the client has closed the connection (a half-close
    /// counts: PostgreSQL clients never half-close and keep reading); never
    /// when that cannot be known.
    pub async fn closed(&self) {
        if let Some(socket) = &self.socket {
            while let Ok(ready) = socket.ready(Interest::READABLE).await {
                if ready.is_read_closed() {
                    return;
                }
                // Data the client sends (a pipelined Sync, a Terminate) also
                // makes the socket readable. That readiness is cleared
                // without reading (a would-block answer clears it), so the
                // wait goes on until the next event and never spins.
                let _ = socket.try_io(Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
        }
        pending().await
    }
}
