//! The catalog: every named object (table, view, and later source,
//! materialized view, sink), its kind, its definition, and the DataFusion
//! `TableProvider` that reads it.
//!
//! Definitions are persisted in `catalog.json` in the data directory, written
//! atomically (temporary file, fsync, rename). The catalog does not know how to
//! build an object from its definition; `Database` does that on open, in
//! creation order, so dependencies always exist first.

mod information_schema;
mod pg_catalog;
mod pg_foreign;
mod schema;
mod system;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use datafusion::catalog::TableProvider;
use serde::{Deserialize, Serialize};

pub use information_schema::InformationSchema;
pub use pg_catalog::RunnelPgCatalog;
pub use schema::CatalogSchema;
pub use system::{SYSTEM_SCHEMA, SystemSchema};

use crate::error::{CatalogErrorKind, Error, Result};
use crate::sql::ObjectKind;
use crate::storage::sync_dir;

/// The name clients connect to and the DataFusion catalog name.
pub const DATABASE_NAME: &str = "runnel";
/// The schema that holds every user object.
pub const SCHEMA_NAME: &str = "public";

const CATALOG_FILE: &str = "catalog.json";
const FORMAT_VERSION: u32 = 1;

/// What is persisted about an object: enough to rebuild it after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Definition {
    /// Unique for the life of the data directory; names storage folders so
    /// that dropping and recreating a name never mixes data.
    pub id: u64,
    pub name: String,
    pub kind: ObjectKind,
    /// The statement that created the object, as the user wrote it.
    pub sql: String,
    /// Objects this one reads from; dropping them requires CASCADE.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A live catalog object.
#[derive(Clone)]
pub struct Entry {
    pub def: Definition,
    pub provider: Arc<dyn TableProvider>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    next_id: u64,
    objects: Vec<Definition>,
}

struct State {
    entries: BTreeMap<String, Entry>,
    next_id: u64,
}

/// The registry of named objects, shared by all sessions.
pub struct Catalog {
    data_dir: PathBuf,
    state: RwLock<State>,
    /// What checkpoints did, for `runnel_catalog.checkpoints`.
    pub checkpoints: Arc<crate::state::CheckpointHistory>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Reads the persisted definitions in `data_dir` (none for a new
    /// directory). The returned catalog is empty; the caller rebuilds each
    /// definition, in order, and [`Catalog::restore`]s it.
    pub fn load(data_dir: &Path) -> Result<(Self, Vec<Definition>)> {
        let path = data_dir.join(CATALOG_FILE);
        let (next_id, defs) = match fs::read(&path) {
            Ok(bytes) => {
                let file: CatalogFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::io(
                        format!(
                            "the catalog file {} is corrupt ({e}); restore it from a backup or move the data directory aside",
                            path.display()
                        ),
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                    )
                })?;
                if file.version != FORMAT_VERSION {
                    return Err(Error::io(
                        format!("{} has format version {}", path.display(), file.version),
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("this runnel reads version {FORMAT_VERSION}"),
                        ),
                    ));
                }
                (file.next_id, file.objects)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (1, Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let catalog = Catalog {
            data_dir: data_dir.to_path_buf(),
            state: RwLock::new(State {
                entries: BTreeMap::new(),
                next_id,
            }),
            checkpoints: Arc::default(),
        };
        Ok((catalog, defs))
    }

    /// The folder where the object with `id` keeps its data.
    pub fn storage_dir(&self, id: u64) -> PathBuf {
        self.data_dir.join("objects").join(id.to_string())
    }

    /// Removes storage folders no definition refers to (left by a crash
    /// between writing data and the catalog, or during a DROP).
    pub fn remove_orphans(&self) -> Result<()> {
        let dir = self.data_dir.join("objects");
        let Ok(listing) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let live: std::collections::HashSet<String> = self
            .read()?
            .entries
            .values()
            .map(|e| e.def.id.to_string())
            .collect();
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                tracing::info!(folder = %item.path().display(), "removing storage of a dropped object");
                fs::remove_dir_all(item.path())
                    .map_err(|e| Error::io(format!("removing {}", item.path().display()), e))?;
            }
        }
        Ok(())
    }

    /// Hands out a fresh object id (persisted with the next catalog write).
    pub fn allocate_id(&self) -> Result<u64> {
        let mut state = self.write()?;
        let id = state.next_id;
        state.next_id += 1;
        Ok(id)
    }

    /// Puts back an object read from disk, without persisting.
    pub fn restore(&self, entry: Entry) -> Result<()> {
        let mut state = self.write()?;
        state.next_id = state.next_id.max(entry.def.id + 1);
        state.entries.insert(entry.def.name.clone(), entry);
        Ok(())
    }

    /// Adds a new object and persists the catalog. Fails with 42P07 if the
    /// name is taken by an object of any kind.
    pub fn create(&self, entry: Entry) -> Result<()> {
        let mut state = self.write()?;
        if let Some(existing) = state.entries.get(&entry.def.name) {
            return Err(Error::catalog(
                CatalogErrorKind::DuplicateTable,
                format!(
                    "relation \"{}\" already exists (as a {})",
                    entry.def.name, existing.def.kind
                ),
            ));
        }
        state.entries.insert(entry.def.name.clone(), entry.clone());
        if let Err(e) = self.persist(&state) {
            state.entries.remove(&entry.def.name);
            return Err(e);
        }
        Ok(())
    }

    /// Removes `name` (of `kind`) and everything that depends on it when
    /// `cascade`; persists the catalog. Returns the removed definitions.
    pub fn drop_object(
        &self,
        name: &str,
        kind: ObjectKind,
        cascade: bool,
    ) -> Result<Vec<Definition>> {
        let mut state = self.write()?;
        let Some(entry) = state.entries.get(name) else {
            return Err(Error::catalog(
                undefined_kind(kind),
                format!("{} \"{name}\" does not exist", kind.noun()),
            ));
        };
        if entry.def.kind != kind {
            return Err(Error::Plan {
                sqlstate: "42809",
                message: format!(
                    "\"{name}\" is not a {}; it is a {} (use DROP {})",
                    kind.noun(),
                    entry.def.kind.noun(),
                    entry.def.kind.tag()
                ),
            });
        }
        let mut doomed = vec![name.to_string()];
        let mut i = 0;
        while i < doomed.len() {
            let target = doomed[i].clone();
            for e in state.entries.values() {
                if e.def.depends_on.contains(&target) && !doomed.contains(&e.def.name) {
                    if !cascade {
                        return Err(Error::catalog(
                            CatalogErrorKind::DependentObjects,
                            format!(
                                "cannot drop {} \"{name}\" because {} \"{}\" depends on it (use DROP ... CASCADE)",
                                kind.noun(),
                                e.def.kind.noun(),
                                e.def.name
                            ),
                        ));
                    }
                    doomed.push(e.def.name.clone());
                }
            }
            i += 1;
        }
        let removed: Vec<Entry> = doomed
            .iter()
            .filter_map(|n| state.entries.remove(n))
            .collect();
        if let Err(e) = self.persist(&state) {
            for entry in removed {
                state.entries.insert(entry.def.name.clone(), entry);
            }
            return Err(e);
        }
        Ok(removed.into_iter().map(|e| e.def).collect())
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        self.state.read().ok()?.entries.get(name).cloned()
    }

    /// All objects, in name order.
    pub fn entries(&self) -> Vec<Entry> {
        self.state
            .read()
            .map(|s| s.entries.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Object names, in name order.
    pub fn names(&self) -> Vec<String> {
        self.state
            .read()
            .map(|s| s.entries.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, State>> {
        self.state
            .read()
            .map_err(|_| crate::internal!("catalog lock poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, State>> {
        self.state
            .write()
            .map_err(|_| crate::internal!("catalog lock poisoned"))
    }

    fn persist(&self, state: &State) -> Result<()> {
        let mut objects: Vec<Definition> = state.entries.values().map(|e| e.def.clone()).collect();
        objects.sort_by_key(|d| d.id);
        let file = CatalogFile {
            version: FORMAT_VERSION,
            next_id: state.next_id,
            objects,
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| crate::internal!("serializing the catalog: {e}"))?;
        write_atomically(&self.data_dir.join(CATALOG_FILE), &bytes)
    }
}

fn undefined_kind(kind: ObjectKind) -> CatalogErrorKind {
    match kind {
        ObjectKind::Table | ObjectKind::View | ObjectKind::MaterializedView => {
            CatalogErrorKind::UndefinedTable
        }
        ObjectKind::Source | ObjectKind::Sink => CatalogErrorKind::UndefinedObject,
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", tmp.display()), e);
    let mut file = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    file.write_all(bytes).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    fs::rename(&tmp, path).map_err(|e| io("renaming", e))?;
    sync_dir(dir)
}
