//! `kiln bundle inspect|verify` and `kiln store import`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build::bundle;
use crate::commands::store::{open_store, LOCK_TIMEOUT};
use crate::commands::{print_out, CommandError, Globals};

/// `kiln bundle verify FILE`: every checksum, no unlisted member, nothing escaping the root.
pub fn verify(path: &Path, json: bool) -> Result<(), CommandError> {
    let verified = bundle::verify(path)
        .map_err(|error| CommandError::Failed(format!("{}: {error}", path.display())))?;
    if json {
        let text = serde_json::to_string_pretty(&verified).expect("JSON");
        print_out(&format!("{text}\n"))?;
    }
    eprintln!(
        "{}: {} members of cluster {} verified",
        path.display(),
        verified.members.len(),
        verified.cluster
    );
    Ok(())
}

/// `kiln bundle inspect FILE`: contents by component with sizes.
pub fn inspect(path: &Path, json: bool) -> Result<(), CommandError> {
    let verified = bundle::verify(path)
        .map_err(|error| CommandError::Failed(format!("{}: {error}", path.display())))?;
    let mut by_kind: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for member in &verified.members {
        let entry = by_kind.entry(member.kind.as_str()).or_default();
        entry.0 += 1;
        entry.1 += member.size;
    }
    if json {
        let kinds: serde_json::Map<String, serde_json::Value> = by_kind
            .iter()
            .map(|(kind, (count, bytes))| {
                (
                    kind.to_string(),
                    serde_json::json!({ "members": count, "bytes": bytes }),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "cluster": verified.cluster,
            "components": kinds,
            "members": verified.members,
        }))
        .expect("JSON");
        return print_out(&format!("{text}\n"));
    }
    let mut text = format!(
        "bundle of cluster {} ({} members)\n",
        verified.cluster,
        verified.members.len()
    );
    for (kind, (count, bytes)) in &by_kind {
        text.push_str(&format!(
            "  {kind:<16} {count:>5} member(s) {bytes:>14} bytes\n"
        ));
    }
    for member in &verified.members {
        text.push_str(&format!(
            "  {:>12}  {}  {}\n",
            member.size,
            &member.sha256[..12],
            member.path
        ));
    }
    print_out(&text)
}

/// `kiln store import FILE`: fill the store from a verified bundle.
pub fn import(globals: &Globals, path: &Path, json: bool) -> Result<(), CommandError> {
    let store = open_store(globals)?;
    let _lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let imported = bundle::import(path, &store)
        .map_err(|error| CommandError::Failed(format!("{}: {error}", path.display())))?;
    if json {
        let text = serde_json::to_string_pretty(&imported).expect("JSON");
        print_out(&format!("{text}\n"))?;
    }
    eprintln!(
        "imported {} blob(s) into {} ({} already there)",
        imported.added,
        store.root().display(),
        imported.present
    );
    Ok(())
}
