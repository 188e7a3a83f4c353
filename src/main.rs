//! The `runnel` binary: parse arguments, set up logging, open the database,
//! serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runnel::server::ServerConfig;
use runnel::{Config, Database};

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A streaming SQL database that speaks the PostgreSQL wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "RUNNEL_LISTEN", default_value = "127.0.0.1:4577")]
    listen: SocketAddr,
    /// Directory for the catalog and table data.
    #[arg(long, env = "RUNNEL_DATA_DIR", default_value = "./runnel-data")]
    data_dir: PathBuf,
    /// Maximum number of concurrent client connections.
    #[arg(long, env = "RUNNEL_MAX_CONNECTIONS", default_value_t = 100)]
    max_connections: usize,
    /// Password clients must give (cleartext over the wire). Required when
    /// listening on a non-loopback address.
    #[arg(long, env = "RUNNEL_PASSWORD")]
    password: Option<String>,
    /// Create a live demo source (`demo_readings`) and a windowed view over it
    /// (`demo_temps_5s`).
    #[arg(long, env = "RUNNEL_DEMO")]
    demo: bool,
    /// Seconds between checkpoints (what a crash may have to replay); a
    /// FLUSH with sinks, CHECKPOINT and a clean stop take one too.
    #[arg(long, env = "RUNNEL_CHECKPOINT_INTERVAL", default_value_t = 5.0)]
    checkpoint_interval: f64,
    /// Start without the last checkpoint (it is moved aside): the way out
    /// of a damaged one. Views are rebuilt from their sources' start
    /// positions; sinks may write rows again.
    #[arg(long)]
    discard_checkpoints: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runnel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if !args.listen.ip().is_loopback() && args.password.is_none() {
        return Err(format!(
            "refusing to listen on {} without a password; set --password (or RUNNEL_PASSWORD), or listen on 127.0.0.1",
            args.listen
        ));
    }
    if !(args.checkpoint_interval.is_finite() && args.checkpoint_interval > 0.0) {
        return Err("--checkpoint-interval must be a positive number of seconds".into());
    }
    let mut config = Config::new(&args.data_dir);
    config.checkpoint_interval = std::time::Duration::from_secs_f64(args.checkpoint_interval);
    config.discard_checkpoints = args.discard_checkpoints;
    let db = Database::open(config).await.map_err(|e| e.to_string())?;
    if args.demo {
        db.install_demo()
            .await
            .map_err(|e| format!("creating the demo objects: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to learn the port.
    println!("runnel listening on {local}");
    tracing::info!(address = %local, data_dir = %args.data_dir.display(), "runnel is ready");
    let config = ServerConfig {
        max_connections: args.max_connections,
        password: args.password,
    };
    runnel::server::run(listener, db.clone(), config, shutdown_signal()).await;
    db.shutdown().await.map_err(|e| e.to_string())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
