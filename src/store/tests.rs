//! Tests of the store against real files in a temp directory.

use std::collections::BTreeSet;
use std::fs::Permissions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// Every file under `directory`, relative, sorted: what a test expects the store to hold.
fn files(directory: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs_err::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    found
}

fn blobs(store: &Store) -> Vec<String> {
    files(&store.root().join("blobs/sha256"))
}

fn tmp(store: &Store) -> Vec<String> {
    files(&store.root().join("tmp"))
}

fn partial(store: &Store, digest: &Digest) -> PathBuf {
    store
        .root()
        .join("tmp")
        .join(format!("{}.partial", digest.hex()))
}

/// A body larger than one hashing chunk, so chunk boundaries are exercised.
fn body() -> Vec<u8> {
    (0..CHUNK + 4321).map(|index| (index % 241) as u8).collect()
}

/// A reader that yields `bytes` and then fails, like a dropped connection.
struct Failing<'a>(&'a [u8]);

impl Read for Failing<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            ));
        }
        let count = self.0.len().min(buffer.len());
        buffer[..count].copy_from_slice(&self.0[..count]);
        self.0 = &self.0[count..];
        Ok(count)
    }
}

#[test]
fn open_creates_the_layout() {
    let (_dir, store) = store();
    assert_eq!(files(store.root()), ["blobs", "lock", "steps", "tmp"]);
    assert_eq!(blobs(&store), Vec::<String>::new());
    // Opening again is fine and keeps what is there.
    Store::open(store.root()).unwrap();
}

#[test]
fn default_root_prefers_kiln_store_then_xdg_then_home() {
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }
    let all = [
        ("KILN_STORE", "/srv/kiln"),
        ("XDG_CACHE_HOME", "/c"),
        ("HOME", "/h"),
    ];
    assert_eq!(
        Store::default_root(env(&all)),
        Some(PathBuf::from("/srv/kiln"))
    );
    let no_override = [("KILN_STORE", ""), ("XDG_CACHE_HOME", "/c"), ("HOME", "/h")];
    assert_eq!(
        Store::default_root(env(&no_override)),
        Some(PathBuf::from("/c/kiln"))
    );
    let relative_xdg = [("XDG_CACHE_HOME", "cache"), ("HOME", "/h")];
    assert_eq!(
        Store::default_root(env(&relative_xdg)),
        Some(PathBuf::from("/h/.cache/kiln"))
    );
    assert_eq!(Store::default_root(env(&[])), None);
}

#[test]
fn write_blob_round_trip() {
    let (_dir, store) = store();
    let bytes = body();
    let digest = Digest::of_bytes(&bytes);
    assert!(!store.has_blob(&digest));
    let path = store
        .write_blob(&digest, Some(bytes.len() as u64), &bytes[..])
        .unwrap();
    assert_eq!(path, store.root().join("blobs/sha256").join(digest.hex()));
    assert_eq!(path, store.blob_path(&digest));
    assert!(store.has_blob(&digest));
    assert_eq!(fs_err::read(&path).unwrap(), bytes);
    assert_eq!(fs_err::metadata(&path).unwrap().mode() & 0o777, 0o444);
    assert_eq!(tmp(&store), Vec::<String>::new(), "the partial is gone");
}

#[test]
fn write_blob_of_an_existing_blob_reads_nothing() {
    let (_dir, store) = store();
    let digest = store.add_blob(&b"hello"[..]).unwrap();
    // A reader that fails if touched.
    let path = store.write_blob(&digest, Some(5), Failing(&[])).unwrap();
    assert_eq!(fs_err::read(path).unwrap(), b"hello");
}

#[test]
fn digest_mismatch_stores_nothing_and_leaves_no_partial() {
    let (_dir, store) = store();
    let pinned = Digest::of_bytes(b"what the pin says");
    let error = store
        .write_blob(&pinned, None, &b"what the server sent"[..])
        .unwrap_err();
    match &error {
        StoreError::DigestMismatch {
            expected,
            actual,
            size,
        } => {
            assert_eq!(expected, &pinned);
            assert_eq!(actual, &Digest::of_bytes(b"what the server sent"));
            assert_eq!(*size, 20);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&pinned.to_string()), "{message}");
    assert!(message.contains("kiln lock"), "{message}");
    assert!(!store.has_blob(&pinned));
    assert_eq!(blobs(&store), Vec::<String>::new());
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn size_mismatch_stores_nothing() {
    let (_dir, store) = store();
    let bytes = b"twelve bytes";
    let digest = Digest::of_bytes(bytes);
    let error = store.write_blob(&digest, Some(13), &bytes[..]).unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::SizeMismatch { digest: named, expected: 13, actual: 12 } if *named == digest
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("12 bytes"), "{error}");
    assert!(!store.has_blob(&digest));
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn a_suspended_write_resumes_at_its_offset() {
    let (_dir, store) = store();
    let bytes = body();
    let digest = Digest::of_bytes(&bytes);
    let half = bytes.len() / 2;

    let mut writer = store.begin_blob(&digest).unwrap();
    assert_eq!(writer.offset(), 0);
    writer.write_all(&bytes[..half]).unwrap();
    assert_eq!(writer.offset(), half as u64);
    writer.suspend();
    assert!(!store.has_blob(&digest));
    assert!(partial(&store, &digest).is_file());

    let mut writer = store.begin_blob(&digest).unwrap();
    assert_eq!(writer.offset(), half as u64);
    writer.write_all(&bytes[half..]).unwrap();
    let path = writer.commit(Some(bytes.len() as u64)).unwrap();
    assert_eq!(fs_err::read(path).unwrap(), bytes);
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn a_dropped_writer_keeps_its_partial_too() {
    let (_dir, store) = store();
    let digest = Digest::of_bytes(b"abcdef");
    {
        let mut writer = store.begin_blob(&digest).unwrap();
        writer.write_all(b"abc").unwrap();
    }
    assert_eq!(store.begin_blob(&digest).unwrap().offset(), 3);
}

#[test]
fn a_failed_source_keeps_the_partial_for_a_resume() {
    let (_dir, store) = store();
    let bytes = body();
    let digest = Digest::of_bytes(&bytes);
    let error = store
        .write_blob(&digest, None, Failing(&bytes[..100]))
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Source { digest: Some(named), .. } if *named == digest),
        "{error:?}"
    );
    assert!(error.to_string().contains("connection reset"), "{error}");
    assert_eq!(store.begin_blob(&digest).unwrap().offset(), 100);
}

#[test]
fn restart_empties_the_partial() {
    let (_dir, store) = store();
    let bytes = b"the whole body";
    let digest = Digest::of_bytes(bytes);
    let mut writer = store.begin_blob(&digest).unwrap();
    writer.write_all(b"the whole").unwrap();
    writer.suspend();

    let mut writer = store.begin_blob(&digest).unwrap();
    assert_eq!(writer.offset(), 9);
    // The server ignored our Range request and sends everything again.
    writer.restart().unwrap();
    assert_eq!(writer.offset(), 0);
    assert_eq!(fs_err::metadata(partial(&store, &digest)).unwrap().len(), 0);
    writer.write_all(bytes).unwrap();
    let path = writer.commit(Some(bytes.len() as u64)).unwrap();
    assert_eq!(fs_err::read(path).unwrap(), bytes);
}

#[test]
fn a_corrupted_partial_fails_the_commit_and_stores_nothing() {
    let (_dir, store) = store();
    let bytes = b"0123456789abcdef";
    let digest = Digest::of_bytes(bytes);
    let mut writer = store.begin_blob(&digest).unwrap();
    writer.write_all(&bytes[..8]).unwrap();
    writer.suspend();
    // The disk (or a stray process) changes a byte of the partial while nobody holds it.
    let mut corrupted = fs_err::read(partial(&store, &digest)).unwrap();
    corrupted[3] ^= 0xff;
    fs_err::write(partial(&store, &digest), &corrupted).unwrap();

    let mut writer = store.begin_blob(&digest).unwrap();
    assert_eq!(writer.offset(), 8);
    writer.write_all(&bytes[8..]).unwrap();
    let error = writer.commit(Some(16)).unwrap_err();
    assert!(
        matches!(error, StoreError::DigestMismatch { size: 16, .. }),
        "{error:?}"
    );
    assert!(!store.has_blob(&digest));
    assert_eq!(blobs(&store), Vec::<String>::new());
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn add_blob_stores_bytes_under_their_digest() {
    let (_dir, store) = store();
    let bytes = body();
    let digest = store.add_blob(&bytes[..]).unwrap();
    assert_eq!(digest, Digest::of_bytes(&bytes));
    assert!(store.has_blob(&digest));
    assert_eq!(fs_err::read(store.blob_path(&digest)).unwrap(), bytes);
    assert_eq!(
        fs_err::metadata(store.blob_path(&digest)).unwrap().mode() & 0o777,
        0o444
    );
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn add_blob_with_a_failing_source_leaves_nothing() {
    let (_dir, store) = store();
    let error = store.add_blob(Failing(b"some")).unwrap_err();
    assert!(
        matches!(error, StoreError::Source { digest: None, .. }),
        "{error:?}"
    );
    assert_eq!(blobs(&store), Vec::<String>::new());
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn an_existing_blob_is_never_overwritten() {
    let (_dir, store) = store();
    let bytes = b"same content, same digest";
    let digest = store.add_blob(&bytes[..]).unwrap();
    let path = store.blob_path(&digest);
    let before = fs_err::metadata(&path).unwrap();
    // Make a change in mtime detectable on file systems with coarse timestamps.
    std::thread::sleep(Duration::from_millis(20));

    assert_eq!(store.add_blob(&bytes[..]).unwrap(), digest);
    store.write_blob(&digest, None, &bytes[..]).unwrap();
    // A writer begun before the blob appeared also leaves the existing file alone.
    let mut writer = store.begin_blob(&digest).unwrap();
    writer.write_all(bytes).unwrap();
    assert_eq!(writer.commit(None).unwrap(), path);

    let after = fs_err::metadata(&path).unwrap();
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(after.nlink(), 1, "no stray hard link left in tmp/");
    assert_eq!(tmp(&store), Vec::<String>::new());
}

#[test]
fn verify_finds_a_flipped_byte_and_a_junk_name() {
    let (_dir, store) = store();
    let good = store.add_blob(&b"good"[..]).unwrap();
    let bad = store.add_blob(&b"soon bad"[..]).unwrap();
    assert_eq!(store.verify().unwrap(), Vec::new());

    let bad_path = store.blob_path(&bad);
    fs_err::set_permissions(&bad_path, Permissions::from_mode(0o644)).unwrap();
    let mut content = fs_err::read(&bad_path).unwrap();
    content[0] ^= 0x01;
    fs_err::write(&bad_path, &content).unwrap();
    let junk = store.root().join("blobs/sha256/notes.txt");
    fs_err::write(&junk, "hello").unwrap();

    let found = store.verify().unwrap();
    let paths: Vec<&PathBuf> = found.iter().map(|bad| &bad.path).collect();
    let mut expected = vec![&bad_path, &junk];
    expected.sort();
    assert_eq!(paths, expected, "{found:?}");
    let problem_of = |path: &PathBuf| &found.iter().find(|bad| &bad.path == path).unwrap().problem;
    assert!(
        problem_of(&bad_path).contains(&Digest::of_bytes(&content).to_string()),
        "{found:?}"
    );
    assert!(
        problem_of(&junk).contains("not a sha256 digest"),
        "{found:?}"
    );
    assert!(!paths.contains(&&store.blob_path(&good)));
}

#[test]
fn gc_keeps_the_keep_set_and_removes_the_rest() {
    let (_dir, store) = store();
    let kept = store.add_blob(&b"kept"[..]).unwrap();
    let dropped = store.add_blob(&b"dropped!"[..]).unwrap();
    fs_err::write(store.root().join("blobs/sha256/junk"), "xyz").unwrap();
    // A stale partial, as a killed download leaves it.
    let stale = Digest::of_bytes(b"never finished");
    let mut writer = store.begin_blob(&stale).unwrap();
    writer.write_all(b"never").unwrap();
    writer.suspend();
    // A live partial: its writer is still running.
    let live = Digest::of_bytes(b"in progress");
    let mut live_writer = store.begin_blob(&live).unwrap();
    live_writer.write_all(b"in").unwrap();
    fs_err::create_dir_all(store.root().join("steps/abc-rootfs")).unwrap();

    let report = store.gc(&BTreeSet::from([kept.clone()])).unwrap();
    assert_eq!(
        report,
        GcReport {
            blobs_removed: 2,
            bytes_freed: 8 + 3 + 5,
            partials_removed: 1,
            kept: 1,
        }
    );
    assert_eq!(blobs(&store), [kept.hex()]);
    assert!(!store.has_blob(&dropped));
    assert_eq!(tmp(&store), [format!("{}.partial", live.hex())]);
    assert!(store.root().join("steps/abc-rootfs").is_dir());
    // The live writer is unharmed.
    live_writer.write_all(b" progress").unwrap();
    live_writer.commit(None).unwrap();
    assert!(store.has_blob(&live));
}

#[test]
fn lock_exclusive_times_out_while_a_build_holds_the_store() {
    let (_dir, store) = store();
    let shared = store.lock_shared(Duration::from_secs(1)).unwrap();
    assert_eq!(shared.mode(), LockMode::Shared);
    let started = Instant::now();
    let error = store
        .lock_exclusive(Duration::from_millis(120))
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert!(matches!(
        error,
        StoreError::LockTimeout {
            mode: LockMode::Exclusive,
            ..
        }
    ));
    let message = error.to_string();
    assert!(message.contains("a build or fetch"), "{message}");
    assert!(message.contains("run gc again"), "{message}");
    assert!(
        message.contains(&store.root().join("lock").display().to_string()),
        "{message}"
    );
    drop(shared);
    store.lock_exclusive(Duration::from_millis(120)).unwrap();
}

#[test]
fn lock_shared_times_out_while_gc_holds_the_store() {
    let (_dir, store) = store();
    let _exclusive = store.lock_exclusive(Duration::ZERO).unwrap();
    let error = store.lock_shared(Duration::from_millis(60)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`kiln gc` is running"), "{message}");
    assert!(message.contains("lock file is"), "{message}");
}

#[test]
fn two_shared_locks_coexist() {
    let (_dir, store) = store();
    let _first = store.lock_shared(Duration::ZERO).unwrap();
    let _second = store.lock_shared(Duration::ZERO).unwrap();
}

#[test]
fn begin_blob_on_a_partial_held_by_another_writer_is_busy() {
    let (_dir, store) = store();
    let digest = Digest::of_bytes(b"contended");
    let mut first = store.begin_blob(&digest).unwrap();
    first.write_all(b"con").unwrap();
    let error = store.begin_blob(&digest).unwrap_err();
    match &error {
        StoreError::BlobBusy {
            digest: named,
            partial: path,
        } => {
            assert_eq!(named, &digest);
            assert_eq!(path, &partial(&store, &digest));
        }
        other => panic!("expected BlobBusy, got {other:?}"),
    }
    assert!(error.to_string().contains(&digest.to_string()), "{error}");
    // The busy attempt did not disturb the first writer's bytes.
    first.write_all(b"tended").unwrap();
    first.commit(Some(9)).unwrap();
    // Once the first writer is done, the blob is simply there.
    assert!(store.has_blob(&digest));
}

#[test]
fn io_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    let mut handle = fs_err::File::create(&file).unwrap();
    handle.write_all(b"not a directory").unwrap();
    let error = Store::open(&file).unwrap_err();
    assert!(matches!(&error, StoreError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("a-file"), "{error}");
}
