//! The commit protocol of a sink's files: a finished file becomes visible
//! only when complete.
//!
//! 1. write the bytes to `.<name>.tmp` in the partition directory (readers'
//!    `*.parquet` globs, pyarrow's dataset discovery and DataFusion's
//!    `.parquet` listing skip it),
//! 2. fsync the file, 3. rename it to `<name>` (atomic), 4. fsync the
//!    directory (and the parents of a directory it had to create).
//!
//! A failure at any step returns the file to the caller with its bytes
//! unchanged: the retry writes the same name with the same bytes, so a
//! visible file is always whole and a retry never duplicates one. Every
//! function here blocks; call them off the async threads.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::parquet::FinishedFile;
use crate::error::{Error, Result};

/// What [`commit_files`] made visible.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Makes `files` visible under `root`, in order, stopping at the first
/// failure. Returns what was committed, the files still to commit and the
/// failure.
pub fn commit_files(
    root: &Path,
    files: Vec<FinishedFile>,
) -> (Committed, Vec<FinishedFile>, Option<Error>) {
    let mut done = Committed::default();
    let mut files = VecDeque::from(files);
    while let Some(file) = files.front() {
        if let Err(e) = commit_file(root, file) {
            return (done, files.into(), Some(e));
        }
        done.files += 1;
        done.rows += file.rows;
        done.bytes += file.bytes.len() as u64;
        files.pop_front();
    }
    (done, Vec::new(), None)
}

fn commit_file(root: &Path, file: &FinishedFile) -> Result<()> {
    let dir = if file.dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(&file.dir)
    };
    create_dir_durably(root, &dir)?;
    let tmp = dir.join(format!(".{}.tmp", file.name));
    let visible = dir.join(&file.name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&file.bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &visible)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", visible.display()), e));
    }
    crate::storage::sync_dir(&dir)
}

/// Creates `dir` (under `root`) and fsyncs the parents of what it created,
/// so a committed file's directory survives a crash too.
fn create_dir_durably(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut d: PathBuf = dir.to_path_buf();
    while d != root {
        let Some(parent) = d.parent() else { break };
        crate::storage::sync_dir(parent)?;
        d = parent.to_path_buf();
    }
    Ok(())
}

/// Removes hidden temporary files a crash left under `root` whose names
/// start with `.{prefix}` (only this sink's own).
pub fn remove_stale_temporaries(root: &Path, prefix: &str) {
    let Ok(listing) = fs::read_dir(root) else {
        return;
    };
    for item in listing.flatten() {
        let name = item.file_name().to_string_lossy().to_string();
        let path = item.path();
        if item.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale_temporaries(&path, prefix);
        } else if name.starts_with(&format!(".{prefix}")) && name.ends_with(".tmp") {
            tracing::info!(file = %path.display(), "removing a sink's unfinished temporary file");
            let _ = fs::remove_file(&path);
        }
    }
}
