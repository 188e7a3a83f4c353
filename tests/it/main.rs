//! The one integration-test binary: the real `runnel` binary driven over real
//! sockets by tokio-postgres, psql, Python drivers and hostile clients.
//!
//! Each module owns one way of talking to the server; `harness` starts and
//! stops servers. Tests here must not reach into the crate's internals.

mod changelog;
mod durability;
mod file_source;
mod generators;
mod harness;
mod hostile;
mod joins;
mod kafka;
mod psql;
mod python;
mod recovery;
mod sinks;
mod slt;
mod sources;
mod subscribe;
mod system_tables;
mod tcp;
mod views;
mod wire;
