//! The store: kiln's content-addressed cache of fetched artifacts and build results.
//!
//! Layout under the root (default `$XDG_CACHE_HOME/kiln`):
//!
//! - `blobs/sha256/<hex>`: artifacts by digest, read-only (mode 0444), never overwritten.
//! - `tmp/`: blobs being written (`<hex>.partial`, resumable) and temp files.
//! - `steps/<key>-<name>/`: build results (owned by the build stage; `gc` here leaves them).
//! - `lock`: the store lock, shared by builds and fetches, exclusive for `kiln gc`.
//!
//! Writes follow ocidir: hash while writing into a temp file on the same file system, check
//! the digest (and size) against the pin *before* renaming, fsync the file, rename, fsync
//! the directory. So a kiln killed at any moment — mid-download, mid-rename, by power loss —
//! leaves the store consistent: only complete, verified blobs are ever at their final name,
//! and what it leaves in `tmp/` is either resumed by the next run or removed by `gc`.
//! Everything that touches the store's files goes through [`Store`]; the network lives in
//! `fetch`, which hands bytes to a [`BlobWriter`].

mod digest;
mod lock;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fs::{Permissions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub use self::digest::{Digest, DigestError};
pub use self::lock::{LockMode, StoreLock};
pub use self::writer::BlobWriter;

use self::digest::CHUNK;
use self::writer::{publish, with_path, BLOB_MODE};

/// Errors of the store. Each names the file or digest concerned and, where the user can act,
/// says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed. The message (from fs-err) names the file.
    #[error("{error}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong; its message names `path`.
        error: io::Error,
    },
    /// The store lock did not come within the timeout.
    #[error("{}", lock::timeout_message(lock_file, *mode, *waited))]
    LockTimeout {
        /// `root/lock`.
        lock_file: PathBuf,
        /// The kind of lock this kiln asked for.
        mode: LockMode,
        /// How long it waited.
        waited: Duration,
    },
    /// Another writer (another kiln, usually) holds the partial of this blob.
    #[error(
        "another kiln is already downloading {digest} (it holds the lock on {}); wait for it \
         to finish, then run this command again",
        partial.display()
    )]
    BlobBusy {
        /// The blob being written.
        digest: Digest,
        /// `tmp/<hex>.partial`.
        partial: PathBuf,
    },
    /// The bytes do not hash to the pinned digest. Nothing was stored.
    #[error(
        "the content fetched for {expected} ({size} bytes) has digest {actual}, so it was not \
         stored. Either the source changed or the pin is wrong: check the source, and if the \
         new content is the one you want, pin it again with `kiln lock`"
    )]
    DigestMismatch {
        /// The pinned digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
        /// How many bytes were received.
        size: u64,
    },
    /// The bytes are not as many as the pin says. Nothing was stored.
    #[error(
        "the content fetched for {digest} is {actual} bytes, but the pin says {expected}, so \
         it was not stored. A cut-off download? Run the command again; if the size stays \
         wrong, check the pin"
    )]
    SizeMismatch {
        /// The pinned digest.
        digest: Digest,
        /// The pinned size.
        expected: u64,
        /// How many bytes were received.
        actual: u64,
    },
    /// Reading the content to store failed (the source, not the store).
    #[error("{}", source_message(digest.as_ref(), error))]
    Source {
        /// The blob being written, when known in advance.
        digest: Option<Digest>,
        /// What went wrong.
        error: io::Error,
    },
}

impl StoreError {
    /// An `Io` error. `error` should name `path` (fs-err's errors do; see `with_path`).
    fn io(path: &Path, error: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

fn source_message(digest: Option<&Digest>, error: &io::Error) -> String {
    match digest {
        Some(digest) => format!(
            "reading the content for {digest} failed: {error}; what arrived is kept in the \
             store's tmp/ and the next run resumes from there"
        ),
        None => format!("reading the content to store failed: {error}; nothing was stored"),
    }
}

/// A blob that failed `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadBlob {
    /// The file in `blobs/sha256/`.
    pub path: PathBuf,
    /// What is wrong with it, and what to do.
    pub problem: String,
}

/// What `gc` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs (and stray files in `blobs/sha256/`) deleted.
    pub blobs_removed: u64,
    /// Bytes of everything deleted (blobs, partials, temp files).
    pub bytes_freed: u64,
    /// Partials and temp files deleted from `tmp/`.
    pub partials_removed: u64,
    /// Blobs kept.
    pub kept: u64,
}

/// An open store. Cheap: holds only its root; locking is explicit (`lock_shared`,
/// `lock_exclusive`).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Distinguishes the temp files of `add_blob` calls within one process (the process id
/// distinguishes processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Open (creating) a store at `root`: `root/blobs/sha256/`, `root/tmp/`, `root/steps/`,
    /// `root/lock`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for directory in [store.blobs_dir(), store.tmp_dir(), root.join("steps")] {
            fs_err::create_dir_all(&directory)
                .map_err(|error| StoreError::io(&directory, error))?;
        }
        let lock_file = store.lock_file();
        fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_file)
            .map_err(|error| StoreError::io(&lock_file, error))?;
        Ok(store)
    }

    /// Where the store is by default: `$KILN_STORE`, else `$XDG_CACHE_HOME/kiln`, else
    /// `$HOME/.cache/kiln`; `None` when none is set. `env` looks up a variable (pass
    /// `|name| std::env::var(name).ok()`); empty values count as unset, and so does a
    /// relative `XDG_CACHE_HOME`, as the XDG base directory spec says.
    pub fn default_root(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let set = |name: &str| env(name).filter(|value| !value.is_empty());
        if let Some(store) = set("KILN_STORE") {
            return Some(PathBuf::from(store));
        }
        if let Some(cache) = set("XDG_CACHE_HOME").filter(|cache| Path::new(cache).is_absolute()) {
            return Some(Path::new(&cache).join("kiln"));
        }
        set("HOME").map(|home| Path::new(&home).join(".cache").join("kiln"))
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be): `root/blobs/sha256/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether the blob `digest` is in the store. Only verified blobs ever have their final
    /// name, so this is enough to skip a download.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Take the store lock shared (builds, fetches), waiting up to `timeout` for a `kiln gc`
    /// to finish.
    pub fn lock_shared(&self, timeout: Duration) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.lock_file(), LockMode::Shared, timeout)
    }

    /// Take the store lock exclusively (`kiln gc`), waiting up to `timeout` for builds and
    /// fetches to finish.
    pub fn lock_exclusive(&self, timeout: Duration) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.lock_file(), LockMode::Exclusive, timeout)
    }

    /// Start (or resume) writing the blob `expected` into `root/tmp/<hex>.partial`. The
    /// partial is locked for as long as the writer lives; if another writer holds it, this
    /// fails with `BlobBusy`. Bytes already in the partial are re-hashed, and
    /// [`BlobWriter::offset`] says how many there are, so a download can resume.
    pub fn begin_blob(&self, expected: &Digest) -> Result<BlobWriter, StoreError> {
        BlobWriter::begin(&self.tmp_dir(), self.blob_path(expected), expected)
    }

    /// Stream `reader` (the whole content) into the blob `expected`, verified against the
    /// digest and `expected_size`; returns the blob's path. If the blob is already there,
    /// reads nothing and returns its path.
    pub fn write_blob(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<PathBuf, StoreError> {
        let path = self.blob_path(expected);
        if path.is_file() {
            return Ok(path);
        }
        let mut writer = self.begin_blob(expected)?;
        // `reader` starts at byte 0, so a leftover partial is of no use here.
        if writer.offset() > 0 {
            writer.restart()?;
        }
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Err(StoreError::Source {
                        digest: Some(expected.clone()),
                        error,
                    })
                }
            };
            writer.write_all(&buffer[..read])?;
        }
        writer.commit(expected_size)
    }

    /// Store bytes whose digest is not known in advance (e.g. a manifest kiln builds):
    /// hashed while written to a temp file in `root/tmp`, then renamed into place. Returns
    /// the digest. An existing blob is never overwritten (same digest, same content).
    pub fn add_blob(&self, mut reader: impl Read) -> Result<Digest, StoreError> {
        let (file, temp) = self.create_temp()?;
        let result = (|| {
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; CHUNK];
            let mut handle = &file;
            loop {
                let read = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        return Err(StoreError::Source {
                            digest: None,
                            error,
                        })
                    }
                };
                hasher.update(&buffer[..read]);
                handle
                    .write_all(&buffer[..read])
                    .map_err(|error| StoreError::io(&temp, error))?;
            }
            let digest = Digest::from_hasher(hasher);
            let blob = self.blob_path(&digest);
            if !blob.is_file() {
                file.set_permissions(Permissions::from_mode(BLOB_MODE))
                    .map_err(|error| StoreError::io(&temp, error))?;
                file.sync_all()
                    .map_err(|error| StoreError::io(&temp, error))?;
                publish(&temp, &blob)?;
            }
            Ok(digest)
        })();
        // On success `publish` has taken the name already; on any failure, leave nothing.
        if temp.exists() {
            fs_err::remove_file(&temp).map_err(|error| StoreError::io(&temp, error))?;
        }
        result
    }

    /// Re-hash every blob; returns the bad ones: content that does not match its name, a
    /// file that cannot be read, a name that is not a digest. Streams each file in 1 MiB
    /// chunks, so memory stays bounded. Sorted by path.
    pub fn verify(&self) -> Result<Vec<BadBlob>, StoreError> {
        let mut bad = Vec::new();
        for (path, name) in self.blob_entries()? {
            let problem = match name.as_deref().and_then(Digest::from_hex) {
                None => Some(
                    "its name is not a sha256 digest (64 lower-case hex digits), so nothing \
                     refers to it; `kiln gc` removes it"
                        .to_owned(),
                ),
                Some(digest) => check_blob(&path, &digest),
            };
            if let Some(problem) = problem {
                bad.push(BadBlob { path, problem });
            }
        }
        Ok(bad)
    }

    /// Delete every blob not in `keep` (and any file in `blobs/sha256/` whose name is not a
    /// digest), plus the partials and temp files in `tmp/` that no writer holds. Leaves
    /// `steps/` alone. The caller holds the exclusive lock.
    pub fn gc(&self, keep: &BTreeSet<Digest>) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        for (path, name) in self.blob_entries()? {
            let digest = name.as_deref().and_then(Digest::from_hex);
            if digest.is_some_and(|digest| keep.contains(&digest)) {
                report.kept += 1;
                continue;
            }
            let metadata =
                fs_err::symlink_metadata(&path).map_err(|error| StoreError::io(&path, error))?;
            if metadata.is_dir() {
                // Not something the store writes; deleting a whole tree on a guess is worse
                // than leaving it (and `verify` reports it).
                continue;
            }
            fs_err::remove_file(&path).map_err(|error| StoreError::io(&path, error))?;
            report.blobs_removed += 1;
            report.bytes_freed += metadata.len();
        }
        let tmp = self.tmp_dir();
        for entry in fs_err::read_dir(&tmp).map_err(|error| StoreError::io(&tmp, error))? {
            let path = entry.map_err(|error| StoreError::io(&tmp, error))?.path();
            let metadata =
                fs_err::symlink_metadata(&path).map_err(|error| StoreError::io(&path, error))?;
            if !metadata.is_file() {
                continue;
            }
            // Under the exclusive store lock nobody should be writing, but a partial whose
            // lock is held is live whatever the reason: leave it.
            let file = match fs_err::File::open(&path) {
                Ok(file) => file,
                // Gone since the listing: someone finished with it.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(StoreError::io(&path, error)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(error)) => {
                    return Err(StoreError::io(&path, with_path("lock", &path, error)))
                }
            }
            fs_err::remove_file(&path).map_err(|error| StoreError::io(&path, error))?;
            report.partials_removed += 1;
            report.bytes_freed += metadata.len();
        }
        Ok(report)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Every entry of `blobs/sha256/`, with its file name when that is UTF-8, sorted.
    fn blob_entries(&self) -> Result<Vec<(PathBuf, Option<String>)>, StoreError> {
        let directory = self.blobs_dir();
        let mut entries = Vec::new();
        for entry in
            fs_err::read_dir(&directory).map_err(|error| StoreError::io(&directory, error))?
        {
            let entry = entry.map_err(|error| StoreError::io(&directory, error))?;
            entries.push((entry.path(), entry.file_name().into_string().ok()));
        }
        entries.sort();
        Ok(entries)
    }

    /// A new, locked temp file in `tmp/` (locked so `gc` knows it is live).
    fn create_temp(&self) -> Result<(fs_err::File, PathBuf), StoreError> {
        let tmp = self.tmp_dir();
        loop {
            let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp.join(format!("add-{}-{count}.tmp", std::process::id()));
            match fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    file.try_lock().map_err(|error| {
                        let error = match error {
                            TryLockError::Error(error) => error,
                            TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
                        };
                        StoreError::io(&path, with_path("lock", &path, error))
                    })?;
                    return Ok((file, path));
                }
                // Left by a dead process that had our process id; take the next name.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(StoreError::io(&path, error)),
            }
        }
    }
}

/// What is wrong with the blob at `path` named `digest`, if anything.
fn check_blob(path: &Path, digest: &Digest) -> Option<String> {
    let metadata = match fs_err::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return Some(format!("it cannot be read: {error}")),
    };
    if !metadata.is_file() {
        return Some(
            "it is not a regular file; remove it and run `kiln fetch` to fetch the blob again"
                .to_owned(),
        );
    }
    let hashed = fs_err::File::open(path).and_then(Digest::of_reader);
    match hashed {
        Err(error) => Some(format!(
            "it cannot be read: {error}; remove it and run `kiln fetch` to fetch it again"
        )),
        Ok((actual, _)) if actual != *digest => Some(format!(
            "its content has digest {actual}, not the one its name says: it is corrupt. Remove \
             it and run `kiln fetch` to fetch it again (and check the disk)"
        )),
        Ok(_) => None,
    }
}
