//! What the benchmark programs share: CPU time and peak memory, read from
//! /proc (Linux), and a server in the process for measuring over the wire.
//! Each program uses a part of it.
#![allow(dead_code)]

/// User + system CPU time of this process, in seconds.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces).
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line (1-based),
    // i.e. 11 and 12 after the command name; clock ticks are 100 Hz on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process so far, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A runnel server on a free loopback port, in this process, for
/// benchmarks that measure over the wire.
pub struct LocalServer {
    pub port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub async fn start(db: &runnel::Database) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runnel::server::run(
            listener,
            db.clone(),
            runnel::server::ServerConfig::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(LocalServer { port, stop, task })
    }

    /// Stops accepting and waits for the connections to drain; close the
    /// clients first so the drain does not wait out its grace period.
    pub async fn stop(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = self.stop.send(());
        self.task.await?;
        Ok(())
    }
}
