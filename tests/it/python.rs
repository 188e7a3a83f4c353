//! Real Python drivers (psycopg 3, psycopg2, SQLAlchemy) against runnel.
//!
//! Each test starts a server and runs one script from tests/python with the
//! port as its argument; the script exits non-zero with a message on any
//! mismatch. The interpreter comes from RUNNEL_TEST_PYTHON (set by
//! scripts/test.sh) or .venv-test; without one the test fails, never skips.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::TestServer;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNNEL_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "RUNNEL_TEST_PYTHON={} does not exist; run scripts/test.sh",
            p.display()
        );
        return p;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python");
    assert!(
        venv.exists(),
        "no Python with the PostgreSQL drivers: set RUNNEL_TEST_PYTHON or run scripts/test.sh \
         (it creates {})",
        venv.display()
    );
    venv
}

pub fn run_script(name: &str) {
    let server = TestServer::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name);
    let out = Command::new(python())
        .arg(&script)
        .arg(server.port().to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the Python interpreter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {name} stdout ---\n{stdout}\n--- {name} stderr ---\n{stderr}");
    assert!(
        out.status.success(),
        "{name} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server stderr ---\n{}",
        out.status,
        server.stderr()
    );
}

#[test]
fn psycopg3() {
    run_script("psycopg3_basics.py");
}

#[test]
fn psycopg2() {
    run_script("psycopg2_basics.py");
}

#[test]
fn sqlalchemy() {
    run_script("sqlalchemy_inspect.py");
}
