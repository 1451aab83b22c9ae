//! `kiln store verify` and `kiln gc`.

use std::time::Duration;

use crate::commands::{print_out, CommandError, Globals};
use crate::lock::closure::closure;
use crate::lock::file::{LockFile, LOCK_FILE};
use crate::profile::load::cluster_path;
use crate::store::Store;

/// How long a command waits for another kiln's store lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Open the store the settings name (creating it).
pub fn open_store(globals: &Globals) -> Result<Store, CommandError> {
    let root = match &globals.store {
        Some(root) => root.clone(),
        None => Store::default_root(|key| std::env::var(key).ok()).ok_or_else(|| {
            CommandError::Usage("no store: set --store, KILN_STORE, XDG_CACHE_HOME or HOME".into())
        })?,
    };
    Store::open(&root).map_err(|error| CommandError::Internal(error.to_string()))
}

/// `kiln store verify`: re-hash every blob; exit 1 naming each bad one.
pub fn verify(globals: &Globals, json: bool) -> Result<(), CommandError> {
    let store = open_store(globals)?;
    let _lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let bad = store
        .verify()
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    if json {
        let text =
            serde_json::to_string_pretty(&serde_json::json!({ "store": store.root(), "bad": bad }))
                .expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    } else {
        for blob in &bad {
            eprintln!("bad blob {}: {}", blob.path.display(), blob.problem);
        }
        if bad.is_empty() {
            eprintln!(
                "store {} verified: every blob matches its digest",
                store.root().display()
            );
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "{} bad blob{} in {}; `kiln gc` removes them, `kiln fetch` downloads them again",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            store.root().display()
        )))
    }
}

/// `kiln gc`: delete every blob the profile's lock does not refer to.
pub fn gc(globals: &Globals, json: bool) -> Result<(), CommandError> {
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    let lock = if lock_path.exists() {
        LockFile::read(&lock_path)?
    } else {
        return Err(CommandError::Usage(format!(
            "{} does not exist: gc keeps what a lock refers to, so without one it would delete everything",
            lock_path.display()
        )));
    };
    let store = open_store(globals)?;
    let _lock = store
        .lock_exclusive(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let keep = closure(&lock, &store);
    let report = store
        .gc(&keep.blobs)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    if json {
        let text = serde_json::to_string_pretty(&report).expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    } else {
        eprintln!(
            "removed {} blob(s) and {} partial download(s), freed {} bytes; kept {} blob(s)",
            report.blobs_removed, report.partials_removed, report.bytes_freed, report.kept
        );
    }
    Ok(())
}

/// `kiln store add FILE...`: store each file under its sha256 and print the digest and size
/// to pin it with (a snap's `digest` and `assert_digest`, for one).
pub fn add(
    globals: &Globals,
    files: &[std::path::PathBuf],
    json: bool,
) -> Result<(), CommandError> {
    let store = open_store(globals)?;
    let _lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let mut added = Vec::new();
    for path in files {
        let file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        let digest = store
            .add_blob(std::io::BufReader::new(file))
            .map_err(|error| CommandError::Failed(format!("{}: {error}", path.display())))?;
        added.push(serde_json::json!({
            "path": path,
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "added": added }))
            .expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    } else {
        let mut text = String::new();
        for entry in &added {
            text.push_str(&format!(
                "{}  {:>12}  {}\n",
                entry["digest"].as_str().unwrap_or_default(),
                entry["size"],
                entry["path"].as_str().unwrap_or_default()
            ));
        }
        print_out(&text)?;
    }
    Ok(())
}
