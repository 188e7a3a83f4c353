//! Resume positions of files: what a checkpoint records for each file and
//! how a resumed reader finds the file again and where it goes on.
//!
//! A position is the byte offset after the last complete line handed over,
//! the file's identity (device, inode) and a fingerprint of its first bytes
//! (up to [`HEAD_BYTES`], and no further than the offset):
//! `offset=..;dev=..;ino=..;head_len=..;head=..`. The identity finds a file
//! renamed since (rotated); the fingerprint tells a file from another that
//! took over a freed inode, or one rewritten in place, as log shippers do.
//! No disk access here beyond reading that first stretch of a file.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::FileId;
use crate::connectors::SplitPositions;
use crate::connectors::position::{ParsedPosition, PositionText};
use crate::connectors::runtime::SplitWriter;
use crate::error::Result;

/// Bytes at the start of a file that its fingerprint covers.
pub(super) const HEAD_BYTES: usize = 1024;

/// FNV-1a: a fingerprint that stays the same across builds.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A file's position: resume at `offset`; `head` holds the file's first
/// bytes read so far (at least up to `offset`, at most [`HEAD_BYTES`]).
pub(super) fn file_position(offset: u64, id: FileId, head: &[u8]) -> String {
    let head = &head[..head.len().min(offset as usize)];
    PositionText::new()
        .with("offset", offset)
        .with("dev", id.0)
        .with("ino", id.1)
        .with("head_len", head.len())
        .with("head", format!("{:016x}", fingerprint(head)))
        .finish()
}

/// One recorded file.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    offset: u64,
    head_len: usize,
    head: u64,
}

/// Where a resumed reader continues the files it finds at its start.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// Recorded files by identity.
    files: BTreeMap<FileId, Recorded>,
    /// The recorded splits (paths), to notice a file replaced under one
    /// and to forget those no longer there.
    paths: BTreeMap<String, FileId>,
}

impl Resume {
    pub fn parse(positions: &SplitPositions) -> Result<Self> {
        let mut resume = Resume::default();
        for (split, text) in positions {
            let p = ParsedPosition::parse(split, text)?;
            let id = (p.get("dev")?, p.get("ino")?);
            let head = p.raw("head").unwrap_or_default();
            let recorded = Recorded {
                offset: p.get("offset")?,
                head_len: p.get("head_len")?,
                head: u64::from_str_radix(head, 16)
                    .map_err(|_| p.error("the fingerprint is not hexadecimal"))?,
            };
            if recorded.head_len > HEAD_BYTES || recorded.head_len as u64 > recorded.offset {
                return Err(p.error("the fingerprint covers more than it may"));
            }
            resume.files.insert(id, recorded);
            resume.paths.insert(split.clone(), id);
        }
        Ok(resume)
    }

    /// Positions `file` (`path`, identity `id`, `len` bytes, read from its
    /// start so far) where it was recorded: returns the offset to go on
    /// from, and the file's first bytes up to there. A file not recorded,
    /// truncated, or another file than the one recorded starts at 0.
    pub async fn position(
        &mut self,
        file: &mut tokio::fs::File,
        path: &Path,
        id: FileId,
        len: u64,
    ) -> std::io::Result<(u64, Vec<u8>)> {
        let Some(recorded) = self.files.remove(&id) else {
            if self.paths.contains_key(&path.display().to_string()) {
                tracing::warn!(
                    "file {} is not the file recorded at the checkpoint (rotated or replaced \
                     since); reading it from the start",
                    path.display()
                );
            }
            return Ok((0, Vec::new()));
        };
        if len < recorded.offset {
            tracing::warn!(
                "file {} is {len} bytes long, shorter than its recorded position {} \
                 (truncated since the checkpoint); reading it from the start",
                path.display(),
                recorded.offset
            );
            return Ok((0, Vec::new()));
        }
        let mut head = vec![0; recorded.head_len];
        file.read_exact(&mut head).await?;
        if fingerprint(&head) != recorded.head {
            tracing::warn!(
                "file {} does not begin as the file recorded at the checkpoint did (replaced \
                 or rewritten since); reading it from the start",
                path.display()
            );
            file.seek(SeekFrom::Start(0)).await?;
            return Ok((0, Vec::new()));
        }
        file.seek(SeekFrom::Start(recorded.offset)).await?;
        Ok((recorded.offset, head))
    }

    /// Forgets the recorded splits that are not among `present`: a resumed
    /// reader will not find them.
    pub async fn forget_absent(
        &self,
        present: &[&Path],
        make: &impl Fn(&Path) -> SplitWriter,
    ) -> Result<()> {
        let present: Vec<String> = present.iter().map(|p| p.display().to_string()).collect();
        for split in self.paths.keys().filter(|s| !present.contains(s)) {
            make(Path::new(split)).forget_position().await?;
        }
        Ok(())
    }
}
