//! The `file` connector: JSON lines, CSV or raw lines from a file, a glob or
//! a directory.
//!
//! Without `follow` a reader reads every matching file to its end and
//! finishes (its last watermark closes every window). With `follow = 'true'`
//! it keeps going like `tail -F`: appended lines, new files that match, and
//! rotation (the path replaced by a new file, or truncated) are picked up.
//! Each file is a split; a line is a record; a partial last line waits for
//! its newline.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use tokio::io::AsyncReadExt;

use super::options::{Options, invalid};
use super::records::RawRecords;
use super::runtime::{Downstream, ReaderContext, SplitWriter};
use super::{Connector, SourceSpec};
use crate::error::{Error, Result};

/// Bytes read per call; big enough to amortize decoding, small enough to
/// keep latency and memory low.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct FileConnector {
    /// The path as written: a file, a directory, or a glob pattern.
    path: String,
    follow: bool,
    /// How often a following reader looks for new data and files.
    poll_interval: Duration,
}

impl FileConnector {
    pub fn configure(options: &mut Options) -> Result<Self> {
        let path = options.required("path", &["file.path"])?;
        let follow = options.bool("follow", &["tail"], false)?;
        let poll_interval = options
            .duration("poll_interval", &["follow.poll_interval"])?
            .unwrap_or(Duration::from_millis(100));
        if poll_interval.is_zero() {
            return Err(invalid("poll_interval must be above zero".into()));
        }
        Ok(FileConnector {
            path,
            follow,
            poll_interval,
        })
    }

    /// The files the path names now, sorted.
    fn matching_files(&self) -> Result<Vec<PathBuf>> {
        list_files(&self.path)
    }
}

/// Lists the regular files a path names: the file itself, a directory's
/// files, or a glob's matches.
fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let is_pattern = path.contains(['*', '?', '[']);
    let mut files = Vec::new();
    if is_pattern {
        let entries =
            glob::glob(path).map_err(|e| invalid(format!("bad file pattern \"{path}\": {e}")))?;
        for entry in entries.flatten() {
            if entry.is_file() {
                files.push(entry);
            }
        }
    } else {
        let p = Path::new(path);
        let meta = std::fs::metadata(p).map_err(|e| unreadable(path, &e))?;
        if meta.is_dir() {
            let listing = std::fs::read_dir(p).map_err(|e| unreadable(path, &e))?;
            for entry in listing.flatten() {
                let entry_path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if entry_path.is_file() && !hidden {
                    files.push(entry_path);
                }
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    files.sort();
    Ok(files)
}

fn unreadable(path: &str, e: &std::io::Error) -> Error {
    Error::Plan {
        sqlstate: "22023",
        message: format!("could not read \"{path}\": {e}"),
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn metadata_kinds(&self) -> Vec<(&'static str, DataType)> {
        vec![("file", DataType::Utf8), ("offset", DataType::Int64)]
    }

    fn is_finite(&self) -> bool {
        !self.follow
    }

    async fn check(&self, _spec: &SourceSpec) -> Result<()> {
        let files = self.matching_files()?;
        for f in &files {
            std::fs::File::open(f).map_err(|e| unreadable(&f.display().to_string(), &e))?;
        }
        if files.is_empty() && !self.follow {
            return Err(invalid(format!(
                "no files match \"{}\" (use follow = 'true' to wait for them)",
                self.path
            )));
        }
        Ok(())
    }

    fn start(&self, ctx: &mut ReaderContext) -> Result<()> {
        let connector = self.clone();
        let spec = ctx.spec.clone();
        let make = {
            let spec = ctx.spec.clone();
            let stats = ctx.stats.clone();
            let tx = ctx.sender();
            move |id: String| {
                SplitWriter::new(id, spec.clone(), stats.clone(), Downstream::One(tx.clone()))
            }
        };
        ctx.spawn(async move { connector.run(spec, make).await });
        Ok(())
    }
}

/// One file being read.
struct OpenFile {
    path: PathBuf,
    file: tokio::fs::File,
    inode: u64,
    /// Byte offset of the next unread byte.
    offset: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
    /// The first line is a CSV header still to be skipped.
    skip_header: bool,
    writer: SplitWriter,
}

impl FileConnector {
    async fn run(
        self,
        spec: Arc<SourceSpec>,
        make: impl Fn(String) -> SplitWriter + Send,
    ) -> Result<()> {
        let mut open: BTreeMap<PathBuf, OpenFile> = BTreeMap::new();
        let mut buf = vec![0u8; READ_CHUNK];
        // Files announced up front hold back the watermark until read, so
        // a later file's older rows are never behind it.
        for path in self.matching_files()? {
            let f = self.open(&spec, &path, &make).await?;
            f.writer.announce().await?;
            open.insert(path, f);
        }
        if !self.follow {
            for (_, mut f) in std::mem::take(&mut open) {
                while read_some(&spec, &mut f, &mut buf).await? {}
                flush_partial(&spec, &mut f).await?;
                f.writer.finish().await?;
            }
            return Ok(());
        }
        loop {
            let mut progressed = false;
            for f in open.values_mut() {
                while read_some(&spec, f, &mut buf).await? {
                    progressed = true;
                }
                if let Some(replaced) = self.rotated(f).await {
                    // The old file is read to its end above; its final
                    // unterminated line is complete now.
                    flush_partial(&spec, f).await?;
                    let writer = std::mem::replace(&mut f.writer, make(String::new()));
                    let mut fresh = self.open(&spec, &f.path, &make).await?;
                    if !replaced {
                        // Truncated in place: same split, from the start.
                        fresh.writer = writer;
                    } else {
                        writer.finish().await?;
                    }
                    *f = fresh;
                    progressed = true;
                }
            }
            if let Ok(files) = self.matching_files() {
                for path in files {
                    if !open.contains_key(&path)
                        && let Ok(f) = self.open(&spec, &path, &make).await
                    {
                        open.insert(path, f);
                        progressed = true;
                    }
                }
            }
            if !progressed {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }

    async fn open(
        &self,
        spec: &Arc<SourceSpec>,
        path: &Path,
        make: &impl Fn(String) -> SplitWriter,
    ) -> Result<OpenFile> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| unreadable(&path.display().to_string(), &e))?;
        let inode = file
            .metadata()
            .await
            .map_err(|e| unreadable(&path.display().to_string(), &e))?
            .ino();
        Ok(OpenFile {
            path: path.to_path_buf(),
            file,
            inode,
            offset: 0,
            partial: Vec::new(),
            skip_header: spec.format.as_ref().is_some_and(|f| f.skips_header()),
            writer: make(path.display().to_string()),
        })
    }

    /// `Some(true)` when the path now names another file, `Some(false)`
    /// when the file was truncated, `None` when nothing changed.
    async fn rotated(&self, f: &OpenFile) -> Option<bool> {
        let meta = tokio::fs::metadata(&f.path).await.ok()?;
        if meta.ino() != f.inode {
            Some(true)
        } else if meta.len() < f.offset {
            Some(false)
        } else {
            None
        }
    }
}

/// Reads what is there; false at the current end of the file.
async fn read_some(spec: &SourceSpec, f: &mut OpenFile, buf: &mut [u8]) -> Result<bool> {
    let n = f
        .file
        .read(buf)
        .await
        .map_err(|e| Error::io(format!("reading {}", f.path.display()), e))?;
    if n == 0 {
        return Ok(false);
    }
    let chunk_start = f.offset - f.partial.len() as u64;
    f.offset += n as u64;
    let mut data = std::mem::take(&mut f.partial);
    data.extend_from_slice(&buf[..n]);
    let Some(last_newline) = memchr::memrchr(b'\n', &data) else {
        f.partial = data;
        return Ok(true);
    };
    f.partial = data[last_newline + 1..].to_vec();
    let complete = &data[..last_newline + 1];
    let mut records = RawRecords::with_capacity(complete.len() / 64 + 1, complete.len());
    let mut line_start = 0;
    for end in memchr::memchr_iter(b'\n', complete) {
        let line = &complete[line_start..end];
        let position = chunk_start + line_start as u64;
        line_start = end + 1;
        if std::mem::take(&mut f.skip_header) {
            continue;
        }
        if line.is_empty() || line == b"\r" {
            continue;
        }
        records.push(line, position);
    }
    send(spec, f, records).await?;
    Ok(true)
}

/// A last line without a newline is a record once the file is done.
async fn flush_partial(spec: &SourceSpec, f: &mut OpenFile) -> Result<()> {
    let line = std::mem::take(&mut f.partial);
    if line.is_empty() || std::mem::take(&mut f.skip_header) {
        return Ok(());
    }
    let mut records = RawRecords::with_capacity(1, line.len());
    records.push(&line, f.offset - line.len() as u64);
    send(spec, f, records).await
}

async fn send(spec: &SourceSpec, f: &mut OpenFile, mut records: RawRecords) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    for m in &spec.metadata {
        let column: ArrayRef = match m.kind.as_str() {
            "file" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                f.path.display().to_string(),
                records.len(),
            ))),
            "offset" => Arc::new(Int64Array::from_iter_values(
                (0..records.len()).map(|i| records.position(i) as i64),
            )),
            other => return Err(crate::internal!("file metadata {other}")),
        };
        records.metadata.push(column);
    }
    let size = f.file.metadata().await.map(|m| m.len()).unwrap_or(f.offset);
    let lag = size.saturating_sub(f.offset) as i64;
    let last = f.offset;
    f.writer.records(records).await?;
    f.writer.set_lag(last, Some(lag));
    Ok(())
}
