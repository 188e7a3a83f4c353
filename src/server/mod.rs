//! The PostgreSQL wire protocol server: accept loop, connection limit,
//! graceful shutdown, and the pgwire handlers of each connection.
//!
//! pgwire types stay inside this folder; everything below it speaks
//! [`Database`] / [`crate::Session`].

mod encode;
mod error;
mod handler;
mod peer;
mod send;
mod startup;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use encode::{JSONB_KEY, encode_batch, pg_fields, pg_type, text_rows};

use crate::Database;
use crate::database::{CopyIn, Session};

/// Server settings beyond the database itself.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections beyond this get SQLSTATE 53300.
    pub max_connections: usize,
    /// When set, clients must send this password.
    pub password: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 100,
            password: None,
        }
    }
}

/// Serves clients on `listener` until `shutdown` resolves, then stops
/// accepting, lets running connections finish for a grace period, and returns.
pub async fn run(
    listener: TcpListener,
    db: Database,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let cancels = Arc::new(ConnectionManager::new());
    let config = Arc::new(config);
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(e) => {
                // Out of file descriptors and similar: wait, do not spin.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let hangup = Arc::new(peer::PeerWatch::new(&socket));
        let session = Arc::new(Mutex::new(None));
        let connection = Connection {
            db: db.clone(),
            config: config.clone(),
            cancels: cancels.clone(),
            permit: limit.clone().try_acquire_owned().ok(),
            session: session.clone(),
            parser: Arc::new(handler::StatementParser {
                db: db.clone(),
                session,
            }),
            copy: Mutex::new(None),
            cancel: std::sync::Mutex::new(None),
            statement_names: Default::default(),
            hangup,
        };
        connections.spawn(async move {
            let handlers = Handlers(Arc::new(connection));
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(open = connections.len(), "no longer accepting connections");
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::info!("closing connections still open after the grace period");
        connections.shutdown().await;
    }
}

/// One client connection's state, shared by its pgwire handlers (which are
/// called one at a time, in message order).
pub(crate) struct Connection {
    db: Database,
    config: Arc<ServerConfig>,
    cancels: Arc<ConnectionManager>,
    /// Held for the life of the connection; `None` when over the limit.
    permit: Option<OwnedSemaphorePermit>,
    /// Created once startup succeeds.
    session: Arc<Mutex<Option<Session>>>,
    /// Plans statements for Parse; shares the session.
    parser: Arc<handler::StatementParser>,
    /// This connection's CancelRequest registration (handle and the guard
    /// that unregisters it when the connection ends).
    cancel: std::sync::Mutex<Option<(Arc<ConnectionHandle>, ConnectionGuard)>>,
    /// Names of statements prepared with Parse, for DEALLOCATE ALL.
    statement_names: std::sync::Mutex<std::collections::HashSet<String>>,
    /// An open COPY FROM STDIN, with the first decoding error if any.
    copy: Mutex<Option<(CopyIn, Option<crate::Error>)>>,
    /// Ends running statements when the client hangs up.
    hangup: Arc<peer::PeerWatch>,
}

struct Handlers(Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.0.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.0.cancels.clone()))
    }
}
