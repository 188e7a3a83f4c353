//! The `file` connector: JSON lines, CSV or raw lines from a file, a glob or
//! a directory. Its line framing (`lines.rs`) is shared with `tcp`.
//!
//! Without `follow` a reader reads every matching file to its end and
//! finishes (its last watermark closes every window); files are opened one
//! at a time, so a glob over many files does not exhaust descriptors. With
//! `follow = 'true'` it keeps going like `tail -F`: appended lines, new files
//! that match, rotation and truncation are picked up.
//!
//! A file is known by its identity (device and inode), not its path. Each
//! poll compares the open files with what the path names now: a file no
//! longer named (deleted, or renamed to a name that does not match) is read
//! to its end, its unterminated last line becomes a record and its split
//! ends; a file renamed to another matching name goes on under that name (so
//! `app.log` rotated to `app.log.1` in a followed directory is neither lost
//! nor read twice); a file shorter than what was read (copytruncate) is read
//! again from byte 0; a file not yet open is read from byte 0. Lines written
//! to a rotated file after it was read to its end and closed are not read.
//!
//! Each file is a split named by its path; a line is a record, positioned by
//! its byte offset; a partial last line waits for its newline (or, without
//! follow, for the end of the file). A line over `max_line_bytes` is a bad
//! record whose first bytes are kept; memory per file stays bounded.
//!
//! Resuming (`file/resume.rs`). A split's position is the byte offset after
//! its last complete line handed over, with the file's identity and a
//! fingerprint of its first bytes. A resumed reader looks files up by
//! identity, so a file renamed since the checkpoint (rotated) goes on under
//! its new name; a file read to its end stays recorded and is not read
//! again; a file shorter than its recorded offset (truncated), or not
//! beginning as the recorded one did (its inode reused, rewritten), or
//! another file under a recorded name, is read from byte 0, with a warning.
//! A followed file that goes away is forgotten.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

mod lines;
mod resume;
#[cfg(test)]
mod tests;

pub(super) use lines::{Framed, LineFramer, Numbering, framed_rejects};

use self::resume::{HEAD_BYTES, Resume, file_position};
use super::options::{Options, invalid};
use super::runtime::{Downstream, ReaderContext, ReadySignal, SplitWriter};
use super::{Connector, SourceSpec};
use crate::error::{Error, Result};

/// Bytes read per call; big enough to amortize decoding, small enough to
/// keep latency and memory low.
const READ_CHUNK: usize = 1 << 20;
/// The default `max_line_bytes`, for files and sockets.
pub(super) const DEFAULT_MAX_LINE: usize = 1 << 20;
/// The largest `max_line_bytes` accepted.
pub(super) const MAX_MAX_LINE: i64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct FileConnector {
    /// The path as written: a file, a directory, or a glob pattern.
    path: String,
    follow: bool,
    /// How often a following reader looks for new data and files.
    poll_interval: Duration,
    /// A longer line is a bad record; bounds the memory of a partial line.
    max_line: usize,
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
        let max_line = options
            .int("max_line_bytes", &[], 1, MAX_MAX_LINE)?
            .map_or(DEFAULT_MAX_LINE, |n| n as usize);
        Ok(FileConnector {
            path,
            follow,
            poll_interval,
            max_line,
        })
    }
}

/// Lists the regular files a path names: the file itself, a directory's
/// files (not hidden ones), or a glob's matches. Sorted.
fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if path.contains(['*', '?', '[']) {
        // As in a shell (and like a directory's listing), `*` does not
        // match hidden files: editors' swap files stay out.
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..Default::default()
        };
        let entries = glob::glob_with(path, options)
            .map_err(|e| invalid(format!("bad file pattern \"{path}\": {e}")))?;
        files.extend(entries.flatten().filter(|p| p.is_file()));
    } else {
        let p = Path::new(path);
        let meta = std::fs::metadata(p).map_err(|e| unreadable(path, &e))?;
        if meta.is_dir() {
            let listing = std::fs::read_dir(p).map_err(|e| unreadable(path, &e))?;
            for entry in listing.flatten() {
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && entry.path().is_file() {
                    files.push(entry.path());
                }
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    files.sort();
    Ok(files)
}

/// A file's identity: it survives renames, and cannot be reused while the
/// file is open.
type FileId = (u64, u64);

/// What the path names now, by identity (the first path of each file). A
/// plain path that does not exist (mid-rotation) names nothing.
fn scan(path: &str) -> Result<BTreeMap<FileId, PathBuf>> {
    let is_pattern = path.contains(['*', '?', '[']);
    if !is_pattern && !Path::new(path).exists() {
        return Ok(BTreeMap::new());
    }
    let mut named = BTreeMap::new();
    for p in list_files(path)? {
        if let Ok(meta) = std::fs::metadata(&p) {
            named.entry((meta.dev(), meta.ino())).or_insert(p);
        }
    }
    Ok(named)
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
        let files = list_files(&self.path)?;
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
        let resume = Resume::parse(&ctx.resume)?;
        let make = {
            let spec = ctx.spec.clone();
            let stats = ctx.stats.clone();
            let tx = ctx.sender();
            move |path: &Path| {
                let id = path.display().to_string();
                SplitWriter::new(id, spec.clone(), stats.clone(), Downstream::One(tx.clone()))
            }
        };
        let ready = ctx.ready_signal();
        ctx.spawn(async move { connector.run(spec, make, ready, resume).await });
        Ok(())
    }
}

/// One file being read.
struct OpenFile {
    /// The name it has now (the split and the `file` metadata).
    path: PathBuf,
    /// Its identity, recorded with its position.
    id: FileId,
    /// Its first bytes (up to `HEAD_BYTES`), fingerprinted in its position.
    head: Vec<u8>,
    file: tokio::fs::File,
    /// Byte offset of the next unread byte.
    offset: u64,
    lines: LineFramer,
    writer: SplitWriter,
}

impl FileConnector {
    async fn run(
        self,
        spec: Arc<SourceSpec>,
        make: impl Fn(&Path) -> SplitWriter + Send,
        ready: ReadySignal,
        mut resume: Resume,
    ) -> Result<()> {
        let mut buf = vec![0u8; READ_CHUNK];
        if !self.follow {
            // Every file is announced before any is read, so that a later
            // file's older rows are never behind the watermark.
            let mut splits = Vec::new();
            for path in list_files(&self.path)? {
                let writer = make(&path);
                writer.announce().await?;
                splits.push((path, writer));
            }
            let paths: Vec<&Path> = splits.iter().map(|(p, _)| p.as_path()).collect();
            resume.forget_absent(&paths, &make).await?;
            ready.send().await?;
            for (path, writer) in splits {
                let mut f = self.open(&path, writer, Some(&mut resume)).await?;
                while f.read_some(&spec, &mut buf).await? {}
                f.end(&spec, true).await?;
            }
            return Ok(());
        }
        let mut open: BTreeMap<FileId, OpenFile> = BTreeMap::new();
        let mut initial: Vec<(FileId, PathBuf)> = self.scan().await?.into_iter().collect();
        initial.sort_by(|a, b| a.1.cmp(&b.1));
        let paths: Vec<&Path> = initial.iter().map(|(_, p)| p.as_path()).collect();
        resume.forget_absent(&paths, &make).await?;
        for (id, path) in initial {
            let f = self.open(&path, make(&path), Some(&mut resume)).await?;
            f.writer.announce().await?;
            open.insert(id, f);
        }
        // Files that appear later are new: read from byte 0.
        drop(resume);
        ready.send().await?;
        loop {
            let mut progressed = false;
            // In name order, as without follow.
            let mut by_name: Vec<&mut OpenFile> = open.values_mut().collect();
            by_name.sort_by(|a, b| a.path.cmp(&b.path));
            for f in by_name {
                // Read before the file: FLUSHes asked by then see what the
                // reads below reach.
                let flush_epoch = f.writer.stats().flush_epoch();
                while f.read_some(&spec, &mut buf).await? {
                    progressed = true;
                }
                // At the end of what the file held: answers those FLUSHes.
                f.writer.caught_up_to(flush_epoch).await?;
            }
            match self.scan().await {
                Ok(named) => {
                    progressed |= self
                        .reconcile(&spec, &mut open, named, &make, &mut buf)
                        .await?;
                }
                Err(e) => tracing::debug!(path = %self.path, "listing files: {e}"),
            }
            if !progressed {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }

    /// Lists the files off the async threads (directories can be large).
    async fn scan(&self) -> Result<BTreeMap<FileId, PathBuf>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || scan(&path))
            .await
            .map_err(|e| crate::internal!("listing files: {e}"))?
    }

    /// Brings the open files in line with what the path names now. Files
    /// that went away or were renamed are handled before new files are
    /// opened, so a split name is ended before another file takes it.
    async fn reconcile(
        &self,
        spec: &SourceSpec,
        open: &mut BTreeMap<FileId, OpenFile>,
        named: BTreeMap<FileId, PathBuf>,
        make: &impl Fn(&Path) -> SplitWriter,
        buf: &mut [u8],
    ) -> Result<bool> {
        let mut changed = false;
        let ids: Vec<FileId> = open.keys().copied().collect();
        for id in ids {
            let Some(f) = open.get_mut(&id) else {
                continue;
            };
            match named.get(&id) {
                None => {
                    // What was written before it went away is still read.
                    while f.read_some(spec, buf).await? {}
                    if let Some(f) = open.remove(&id) {
                        f.end(spec, false).await?;
                    }
                    changed = true;
                }
                Some(path) if *path != f.path => {
                    while f.read_some(spec, buf).await? {}
                    // The new name is recorded before the old one is
                    // forgotten: a checkpoint between the two finds the
                    // file under either, at the same offset.
                    let mut renamed = make(path);
                    renamed.resume_at(f.position());
                    renamed.tell_position().await?;
                    let mut old = std::mem::replace(&mut f.writer, renamed);
                    old.forget_position().await?;
                    old.finish().await?;
                    f.path = path.clone();
                    changed = true;
                }
                Some(_) => {
                    let len = f.file.metadata().await.map_or(f.offset, |m| m.len());
                    if len < f.offset {
                        f.restart(spec).await?;
                        changed = true;
                    }
                }
            }
        }
        for (id, path) in named {
            if let Entry::Vacant(slot) = open.entry(id) {
                match self.open(&path, make(&path), None).await {
                    Ok(f) => {
                        slot.insert(f);
                        changed = true;
                    }
                    Err(e) => tracing::debug!("{e}; trying again at the next poll"),
                }
            }
        }
        Ok(changed)
    }

    /// Opens `path` at its start, or where `resume` recorded it, and
    /// tells the reader that position.
    async fn open(
        &self,
        path: &Path,
        mut writer: SplitWriter,
        resume: Option<&mut Resume>,
    ) -> Result<OpenFile> {
        let unreadable = |e: std::io::Error| unreadable(&path.display().to_string(), &e);
        let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        let meta = file.metadata().await.map_err(unreadable)?;
        let id = (meta.dev(), meta.ino());
        let (offset, head) = match resume {
            Some(r) => r
                .position(&mut file, path, id, meta.len())
                .await
                .map_err(unreadable)?,
            None => (0, Vec::new()),
        };
        let skip_header = writer
            .spec()
            .format
            .as_ref()
            .is_some_and(|f| f.skips_header());
        let mut lines = LineFramer::new(self.max_line, Numbering::ByteOffset, skip_header);
        if offset > 0 {
            // Past the header, which was the first line.
            lines.reset(offset);
        }
        writer.resume_at(file_position(offset, id, &head));
        writer.tell_position().await?;
        Ok(OpenFile {
            path: path.to_path_buf(),
            id,
            head,
            file,
            offset,
            lines,
            writer,
        })
    }
}

impl OpenFile {
    /// Where this file resumes after the lines handed over so far.
    fn position(&self) -> String {
        file_position(self.lines.consumed(), self.id, &self.head)
    }

    /// Reads what is there; false at the current end of the file.
    async fn read_some(&mut self, spec: &SourceSpec, buf: &mut [u8]) -> Result<bool> {
        let n = self
            .file
            .read(buf)
            .await
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        if n == 0 {
            return Ok(false);
        }
        if self.head.len() < HEAD_BYTES && self.head.len() as u64 == self.offset {
            let more = n.min(HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&buf[..more]);
        }
        self.offset += n as u64;
        let framed = self.lines.feed(&buf[..n]);
        self.send(spec, framed).await?;
        Ok(true)
    }

    /// The file is done: its unterminated last line is a record, and its
    /// split ends. With `keep` its position stays recorded (a file read to
    /// its end is not read again); without, it is forgotten (a followed
    /// file that went away).
    async fn end(mut self, spec: &SourceSpec, keep: bool) -> Result<()> {
        let framed = self.lines.finish();
        self.send(spec, framed).await?;
        if !keep {
            self.writer.forget_position().await?;
        }
        self.writer.finish().await
    }

    /// Truncated in place: the same split again from byte 0. The old
    /// content's unterminated last line is a record; the new content has
    /// no header of its own (the writer only truncated).
    async fn restart(&mut self, spec: &SourceSpec) -> Result<()> {
        let framed = self.lines.finish();
        self.send(spec, framed).await?;
        self.file
            .seek(SeekFrom::Start(0))
            .await
            .map_err(|e| Error::io(format!("rewinding {}", self.path.display()), e))?;
        self.offset = 0;
        self.head.clear();
        self.lines.reset(0);
        self.writer.resume_at(self.position());
        self.writer.tell_position().await
    }

    async fn send(&mut self, spec: &SourceSpec, framed: Framed) -> Result<()> {
        let Framed {
            mut records,
            too_long,
        } = framed;
        framed_rejects(&self.writer, too_long)?;
        self.writer.resume_at(self.position());
        if records.is_empty() {
            // Only empty, overlong or header lines: the position moves.
            return self.writer.tell_position().await;
        }
        for m in &spec.metadata {
            let column: ArrayRef = match m.kind.as_str() {
                "file" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    self.path.display().to_string(),
                    records.len(),
                ))),
                "offset" => Arc::new(Int64Array::from_iter_values(
                    (0..records.len()).map(|i| records.position(i) as i64),
                )),
                other => return Err(crate::internal!("file metadata {other}")),
            };
            records.metadata.push(column);
        }
        let size = self.file.metadata().await.map_or(self.offset, |m| m.len());
        let lag = size.saturating_sub(self.offset) as i64;
        self.writer.records(records).await?;
        self.writer.set_lag(self.offset, Some(lag));
        Ok(())
    }
}
