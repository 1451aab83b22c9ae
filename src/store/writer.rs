//! `BlobWriter`: one blob on its way into the store, resumable across runs.
//!
//! The bytes go to `tmp/<hex>.partial`, hashed in the same pass as they are written. The
//! partial is locked (`flock`) for as long as the writer lives, so two kilns never append to
//! the same partial, and `gc` can tell a live partial from one a killed kiln left behind. A
//! partial left behind is not wasted: the next `begin_blob` re-hashes it and the download
//! resumes from its end. Only `commit` puts a blob at its final name, and only after the
//! digest (and size) matched: a blob in `blobs/sha256/` is always complete and verified.

use std::fs::{Permissions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::digest::CHUNK;
use super::{Digest, StoreError};

/// Mode of a finished blob: nobody writes to a blob, not even its owner.
pub(super) const BLOB_MODE: u32 = 0o444;

/// A blob being written. Create with [`super::Store::begin_blob`]; finish with
/// [`BlobWriter::commit`], or keep the partial for later with [`BlobWriter::suspend`] (which
/// dropping the writer also does).
#[derive(Debug)]
pub struct BlobWriter {
    /// The partial, open for append and locked exclusively.
    file: fs_err::File,
    /// `tmp/<hex>.partial`.
    partial: PathBuf,
    /// `blobs/sha256/<hex>`, where `commit` puts it.
    blob: PathBuf,
    /// What the bytes must hash to.
    expected: Digest,
    /// Hash of the partial's bytes so far.
    hasher: Sha256,
    /// Number of bytes in the partial.
    offset: u64,
}

impl BlobWriter {
    /// Open (creating) and lock the partial for `expected`, and re-hash what it holds.
    pub(super) fn begin(
        tmp_dir: &Path,
        blob: PathBuf,
        expected: &Digest,
    ) -> Result<BlobWriter, StoreError> {
        let partial = tmp_dir.join(format!("{}.partial", expected.hex()));
        let file = open_locked(&partial, expected)?;
        let mut writer = BlobWriter {
            file,
            partial,
            blob,
            expected: expected.clone(),
            hasher: Sha256::new(),
            offset: 0,
        };
        writer.rehash()?;
        Ok(writer)
    }

    /// How many bytes the partial already holds: where a resumed download starts (an HTTP
    /// `Range: bytes=<offset>-`).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Append `bytes` to the partial, hashing them in the same pass.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if let Err(error) = self.file.write_all(bytes) {
            // Some of `bytes` may have reached the file; re-read it so `offset` and the hash
            // agree with the disk again and the caller can still resume or restart. If even
            // that fails, `commit` will report a mismatch rather than store a wrong blob.
            let _ = self.rehash();
            return Err(StoreError::io(&self.partial, error));
        }
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Empty the partial and start again from byte 0 (e.g. the server ignored a `Range`
    /// request and sent the whole body).
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(|error| StoreError::io(&self.partial, error))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Check the digest (and the size, when given) and only then move the partial to
    /// `blobs/sha256/<hex>`: fsync the file, rename, fsync the directory. On a mismatch the
    /// partial is deleted and nothing is stored. An existing blob is never overwritten (it
    /// has the same digest, so the same content): the partial is dropped instead.
    pub fn commit(self, expected_size: Option<u64>) -> Result<PathBuf, StoreError> {
        if let Some(expected) = expected_size {
            if expected != self.offset {
                self.discard()?;
                return Err(StoreError::SizeMismatch {
                    digest: self.expected,
                    expected,
                    actual: self.offset,
                });
            }
        }
        let actual = Digest::from_hasher(self.hasher.clone());
        if actual != self.expected {
            self.discard()?;
            return Err(StoreError::DigestMismatch {
                expected: self.expected,
                actual,
                size: self.offset,
            });
        }
        self.file
            .set_permissions(Permissions::from_mode(BLOB_MODE))
            .map_err(|error| StoreError::io(&self.partial, error))?;
        self.file
            .sync_all()
            .map_err(|error| StoreError::io(&self.partial, error))?;
        publish(&self.partial, &self.blob)?;
        // The lock goes with the file, after the partial's name is gone.
        Ok(self.blob)
    }

    /// Keep the partial for a later resume (e.g. the connection dropped). Dropping the
    /// writer does the same; this says so at the call site.
    pub fn suspend(self) {}

    /// Delete the partial (still holding its lock, so nobody resumes a file being deleted).
    fn discard(&self) -> Result<(), StoreError> {
        fs_err::remove_file(&self.partial).map_err(|error| StoreError::io(&self.partial, error))
    }

    /// Recompute `hasher` and `offset` from the partial's bytes on disk.
    fn rehash(&mut self) -> Result<(), StoreError> {
        let path = &self.partial;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0))
            .map_err(|error| StoreError::io(path, error))?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(StoreError::io(path, error)),
            };
            hasher.update(&buffer[..read]);
            offset += read as u64;
        }
        self.hasher = hasher;
        self.offset = offset;
        Ok(())
    }
}

/// Open `partial` for append (creating it) and lock it exclusively without waiting.
fn open_locked(partial: &Path, expected: &Digest) -> Result<fs_err::File, StoreError> {
    // The lock belongs to the file, not its name. Between our open and our lock, another
    // kiln may have committed that partial (renaming it away) or discarded it, and a third
    // may have made a new one; a lock on the old file would protect nothing. So after
    // locking, check the name still leads to the file we hold, and start over if not.
    for _ in 0..16 {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(partial)
            .map_err(|error| StoreError::io(partial, error))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::BlobBusy {
                    digest: expected.clone(),
                    partial: partial.to_path_buf(),
                })
            }
            Err(TryLockError::Error(error)) => {
                return Err(StoreError::io(partial, with_path("lock", partial, error)))
            }
        }
        let held = file
            .metadata()
            .map_err(|error| StoreError::io(partial, error))?;
        match fs_err::metadata(partial) {
            Ok(named) if named.dev() == held.dev() && named.ino() == held.ino() => return Ok(file),
            Ok(_) => continue,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(StoreError::io(partial, error)),
        }
    }
    // Only a storm of other kilns committing and re-creating this very partial gets here.
    Err(StoreError::BlobBusy {
        digest: expected.clone(),
        partial: partial.to_path_buf(),
    })
}

/// Give `from` (complete, verified, fsynced, read-only) the name `blob`, never replacing an
/// existing blob, then fsync the directory so the new name survives a crash.
pub(super) fn publish(from: &Path, blob: &Path) -> Result<(), StoreError> {
    // A hard link fails atomically if `blob` exists, where a rename would replace it. Two
    // kilns finishing the same digest at once are both right; the first one keeps its file.
    match fs_err::hard_link(from, blob) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        // Some file systems refuse hard links; there, check then rename (the race left is
        // between two files with the same verified content).
        Err(_) if !blob.exists() => {
            fs_err::rename(from, blob).map_err(|error| StoreError::io(blob, error))?;
        }
        Err(_) => {}
    }
    if from.exists() {
        fs_err::remove_file(from).map_err(|error| StoreError::io(from, error))?;
    }
    sync_directory(blob.parent().expect("a blob path has a parent"))
}

/// fsync a directory, so the names created or removed in it are on disk.
pub(super) fn sync_directory(directory: &Path) -> Result<(), StoreError> {
    fs_err::File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| StoreError::io(directory, error))
}

/// An error from a std call that does not name its file, with the file named, in the same
/// form fs-err uses (our `Io` errors display the inner error as it is).
pub(super) fn with_path(action: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("failed to {action} `{}`: {error}", path.display()),
    )
}
