//! Checkpoints on disk.
//!
//! ```text
//! data_dir/checkpoints/
//!   CURRENT                     the epoch of the last complete checkpoint
//!   <epoch>/manifest.json       every part: owner, name, file, length, CRC32
//!   <epoch>/<owner>.<part>      the parts' bytes
//! ```
//!
//! A checkpoint is complete when `CURRENT` names it. Parts and manifest are
//! written and fsynced first; `CURRENT` is written to a temporary, fsynced
//! and renamed over the old one last, so a crash at any point leaves the
//! previous checkpoint whole. The newest two complete checkpoints are kept;
//! directories of abandoned epochs are removed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Owner, Parts, fault};
use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "manifest.json";
/// The flag that starts without the checkpoints, named in every error.
pub const DISCARD_FLAG: &str = "--discard-checkpoints";

/// One part's file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartFile {
    pub file: String,
    pub len: u64,
    pub crc32: u32,
}

/// What a checkpoint holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub epoch: u64,
    /// Wall-clock time the checkpoint completed (ms since the Unix epoch).
    pub created_ms: u64,
    pub owners: BTreeMap<Owner, BTreeMap<String, PartFile>>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.owners
            .values()
            .flat_map(|p| p.values())
            .map(|f| f.len)
            .sum()
    }

    pub fn files(&self) -> u64 {
        self.owners.values().map(|p| p.len() as u64).sum()
    }
}

/// The state of the last complete checkpoint, read and verified.
#[derive(Debug, Default)]
pub struct Restored {
    pub epoch: u64,
    pub owners: BTreeMap<Owner, Parts>,
    pub bytes: u64,
}

/// The checkpoint directory of one database.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

impl CheckpointStore {
    pub fn new(data_dir: &Path) -> Self {
        CheckpointStore {
            root: data_dir.join("checkpoints"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.root.join(format!("{epoch:012}"))
    }

    /// Writes checkpoint `epoch` and makes it the current one. Blocks: call
    /// it off the async threads. On error nothing current has changed.
    pub fn write(&self, epoch: u64, owners: &BTreeMap<Owner, Parts>) -> Result<Manifest> {
        let dir = self.epoch_dir(epoch);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io(&dir, "removing", e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io(&dir, "creating", e))?;
        let mut manifest = Manifest {
            epoch,
            created_ms: now_ms(),
            owners: BTreeMap::new(),
        };
        for (owner, parts) in owners {
            let mut files = BTreeMap::new();
            for (name, bytes) in parts {
                let file = format!("{owner}.{name}");
                write_synced(&dir.join(&file), bytes)?;
                files.insert(
                    name.clone(),
                    PartFile {
                        file,
                        len: bytes.len() as u64,
                        crc32: crc32fast::hash(bytes),
                    },
                );
            }
            manifest.owners.insert(owner.clone(), files);
        }
        fault::check("after_state_write")?;
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| crate::internal!("encoding a checkpoint manifest: {e}"))?;
        write_synced(&dir.join(MANIFEST), &json)?;
        crate::storage::sync_dir(&dir)?;
        crate::storage::sync_dir(&self.root)?;
        fault::check("before_manifest_switch")?;
        let tmp = self.root.join(format!(".{CURRENT}.tmp"));
        write_synced(&tmp, format!("{epoch}\n").as_bytes())?;
        let current = self.root.join(CURRENT);
        fs::rename(&tmp, &current).map_err(|e| io(&current, "renaming to", e))?;
        crate::storage::sync_dir(&self.root)?;
        Ok(manifest)
    }

    /// The epoch `CURRENT` names, if any checkpoint has completed.
    pub fn current_epoch(&self) -> Result<Option<u64>> {
        let path = self.root.join(CURRENT);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(&path, &e.to_string())),
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| unreadable(&path, "it does not name a checkpoint"))
    }

    /// Reads and verifies the current checkpoint. A missing or damaged file
    /// is an error that names it and the way out.
    pub fn load(&self) -> Result<Option<Restored>> {
        let Some(epoch) = self.current_epoch()? else {
            return Ok(None);
        };
        let dir = self.epoch_dir(epoch);
        let path = dir.join(MANIFEST);
        let bytes = fs::read(&path).map_err(|e| unreadable(&path, &e.to_string()))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| unreadable(&path, &e.to_string()))?;
        if manifest.epoch != epoch {
            return Err(unreadable(&path, "it belongs to another checkpoint"));
        }
        let mut restored = Restored {
            epoch,
            ..Default::default()
        };
        for (owner, files) in &manifest.owners {
            let mut parts = Parts::new();
            for (name, f) in files {
                let path = dir.join(&f.file);
                let bytes = fs::read(&path).map_err(|e| unreadable(&path, &e.to_string()))?;
                if bytes.len() as u64 != f.len {
                    return Err(unreadable(
                        &path,
                        &format!("{} bytes, the manifest says {}", bytes.len(), f.len),
                    ));
                }
                if crc32fast::hash(&bytes) != f.crc32 {
                    return Err(unreadable(
                        &path,
                        "its checksum does not match the manifest",
                    ));
                }
                restored.bytes += f.len;
                parts.insert(name.clone(), bytes);
            }
            restored.owners.insert(owner.clone(), parts);
        }
        Ok(Some(restored))
    }

    /// Removes every checkpoint directory but the newest `keep` complete
    /// ones (the current one always stays), and abandoned ones.
    pub fn clean(&self, keep: usize) -> Result<()> {
        let Some(current) = self.current_epoch()? else {
            return Ok(());
        };
        let Ok(listing) = fs::read_dir(&self.root) else {
            return Ok(());
        };
        let mut epochs: Vec<(u64, PathBuf)> = listing
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.parse::<u64>().ok().map(|n| (n, e.path()))
            })
            .collect();
        epochs.sort();
        let complete: Vec<u64> = epochs
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n <= current)
            .rev()
            .take(keep.max(1))
            .collect();
        for (n, path) in epochs {
            // Later than CURRENT: a checkpoint being written right now.
            if n > current || complete.contains(&n) {
                continue;
            }
            fs::remove_dir_all(&path).map_err(|e| io(&path, "removing", e))?;
        }
        Ok(())
    }

    /// Starts over: moves the checkpoints aside (kept for inspection).
    pub fn discard(&self) -> Result<Option<PathBuf>> {
        if !self.root.exists() {
            return Ok(None);
        }
        let aside = self
            .root
            .with_file_name(format!("checkpoints.discarded-{}", now_ms()));
        fs::rename(&self.root, &aside).map_err(|e| io(&self.root, "moving aside", e))?;
        Ok(Some(aside))
    }

    /// Removes epoch directories after `CURRENT` (a crash while writing).
    pub fn remove_incomplete(&self) -> Result<()> {
        let current = self.current_epoch()?.unwrap_or(0);
        let Ok(listing) = fs::read_dir(&self.root) else {
            return Ok(());
        };
        for e in listing.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.parse::<u64>().is_ok_and(|n| n > current) {
                let path = e.path();
                fs::remove_dir_all(&path).map_err(|e| io(&path, "removing", e))?;
            }
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| io(path, "writing", e))
}

fn io(path: &Path, doing: &str, e: std::io::Error) -> Error {
    Error::io(format!("{doing} {}", path.display()), e)
}

/// A checkpoint file that cannot be used: startup stops here.
fn unreadable(path: &Path, why: &str) -> Error {
    Error::io(
        format!(
            "checkpoint file {} cannot be used ({why}); runnel will not start from a damaged \
             checkpoint. To start without it, run `runnel serve {DISCARD_FLAG}`: views are \
             rebuilt from their sources' start positions and sinks may write rows again",
            path.display()
        ),
        std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: u8) -> BTreeMap<Owner, Parts> {
        let mut p = Parts::new();
        p.insert("state".into(), vec![n; 100]);
        let mut o = BTreeMap::new();
        o.insert("1.dataflow".to_string(), p);
        o
    }

    #[test]
    fn the_current_checkpoint_comes_back_and_old_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        for epoch in 1..=4 {
            store.write(epoch, &parts(epoch as u8)).unwrap();
            store.clean(2).unwrap();
        }
        let r = store.load().unwrap().unwrap();
        assert_eq!(r.epoch, 4);
        assert_eq!(r.owners["1.dataflow"]["state"], vec![4u8; 100]);
        let dirs = fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .count();
        assert_eq!(dirs, 2);
    }

    #[test]
    fn a_damaged_part_stops_the_load_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        store.write(7, &parts(7)).unwrap();
        let file = store.epoch_dir(7).join("1.dataflow.state");
        let mut bytes = fs::read(&file).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&file, bytes).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("1.dataflow.state"), "{e}");
        assert!(e.contains(DISCARD_FLAG), "{e}");
        fs::remove_file(&file).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("1.dataflow.state"), "{e}");
        store.discard().unwrap();
        assert!(store.load().unwrap().is_none());
    }
}
