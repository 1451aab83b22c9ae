//! The store lock: builds and fetches share the store, `kiln gc` has it alone.
//!
//! An advisory lock (`flock`) on `root/lock`, taken through std's `File::try_lock*` and
//! polled until a timeout, so a second kiln never hangs silently behind a long gc: it
//! waits a while, then says who holds the store and what to do. The kernel drops the lock
//! when its holder exits, however it exits, so a killed kiln never leaves the store locked.

use std::fmt;
use std::fs::TryLockError;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::StoreError;

/// How often a waiting kiln tries the lock again.
const POLL: Duration = Duration::from_millis(50);

/// Which kind of store lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Held by builds and fetches; any number at once.
    Shared,
    /// Held by `kiln gc`; excludes everyone else.
    Exclusive,
}

impl fmt::Display for LockMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// A held store lock; released when dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct StoreLock {
    // Never read: holding the open file is what holds the lock.
    _file: fs_err::File,
    mode: LockMode,
}

impl StoreLock {
    /// Whether this lock is shared or exclusive.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

/// Take the lock on `lock_file` in `mode`, trying every [`POLL`] until `timeout` has passed.
pub(super) fn acquire(
    lock_file: &Path,
    mode: LockMode,
    timeout: Duration,
) -> Result<StoreLock, StoreError> {
    // A fresh open file description per lock: flock locks belong to it, so two `StoreLock`s
    // in one process exclude each other exactly as two processes would.
    let file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_file)
        .map_err(|error| StoreError::io(lock_file, error))?;
    let started = Instant::now();
    loop {
        let attempt = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => return Ok(StoreLock { _file: file, mode }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(error)) => return Err(StoreError::io(lock_file, error)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(StoreError::LockTimeout {
                lock_file: lock_file.to_path_buf(),
                mode,
                waited,
            });
        }
        thread::sleep(POLL.min(timeout - waited));
    }
}

/// The message for a lock that did not come in time: who holds the store and what to do.
pub(super) fn timeout_message(lock_file: &Path, mode: LockMode, waited: Duration) -> String {
    let seconds = waited.as_secs_f64();
    match mode {
        LockMode::Shared => format!(
            "waited {seconds:.1}s for the store, but another kiln holds it exclusively: \
             `kiln gc` is running. Wait for that gc to finish, then run this command again \
             (the lock file is {})",
            lock_file.display()
        ),
        LockMode::Exclusive => format!(
            "waited {seconds:.1}s for the store, but another kiln is using it: a build or \
             fetch (`kiln build`, `kiln fetch`, ...) or another `kiln gc`. Wait for that \
             command to finish, then run gc again (the lock file is {})",
            lock_file.display()
        ),
    }
}
