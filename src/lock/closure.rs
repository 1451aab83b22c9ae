//! Every blob a lock refers to: what `kiln fetch` must have and `kiln gc` must keep.
//!
//! Images are followed through their manifests in the store (config and layers), since
//! the lock pins manifests and the manifests pin the rest.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::lock::file::LockFile;
use crate::store::{Digest, Store};

/// Blobs a lock refers to, and the lock entries whose manifests are not in the store yet
/// (their layers cannot be listed until they are fetched).
#[derive(Debug, Default)]
pub struct Closure {
    /// Every blob digest referred to.
    pub blobs: BTreeSet<Digest>,
    /// Image manifests missing from the store, as `image@digest`.
    pub unresolved: Vec<String>,
    /// Digests in the lock that do not parse (a hand-edited lock).
    pub invalid: Vec<String>,
}

/// The blobs an image manifest (not an index) names: its config and layers.
pub fn manifest_blobs(bytes: &[u8]) -> Option<Vec<Digest>> {
    let manifest: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut digests = Vec::new();
    if let Some(config) = manifest.get("config") {
        digests.push(Digest::from_str(config.get("digest")?.as_str()?).ok()?);
    }
    for layer in manifest.get("layers")?.as_array()? {
        digests.push(Digest::from_str(layer.get("digest")?.as_str()?).ok()?);
    }
    Some(digests)
}

/// Everything `lock` refers to, following image manifests found in `store`.
pub fn closure(lock: &LockFile, store: &Store) -> Closure {
    let mut closure = Closure::default();
    let add = |closure: &mut Closure, text: &str| -> Option<Digest> {
        match Digest::from_str(text) {
            Ok(digest) => {
                closure.blobs.insert(digest.clone());
                Some(digest)
            }
            Err(_) => {
                closure.invalid.push(text.to_string());
                None
            }
        }
    };
    for image in &lock.images {
        add(&mut closure, &image.digest);
        let manifests: Vec<&str> = if image.platforms.is_empty() {
            vec![image.digest.as_str()]
        } else {
            image
                .platforms
                .iter()
                .map(|platform| platform.digest.as_str())
                .collect()
        };
        for manifest in manifests {
            let Some(digest) = add(&mut closure, manifest) else {
                continue;
            };
            match fs_err::read(store.blob_path(&digest))
                .ok()
                .and_then(|bytes| manifest_blobs(&bytes))
            {
                Some(blobs) => closure.blobs.extend(blobs),
                None => closure
                    .unresolved
                    .push(format!("{}@{manifest}", image.name)),
            }
        }
    }
    for chart in &lock.charts {
        add(&mut closure, &chart.digest);
    }
    for snap in &lock.snaps {
        add(&mut closure, &snap.digest);
        add(&mut closure, &snap.assert_digest);
    }
    for file in &lock.files {
        add(&mut closure, &file.digest);
    }
    for deb in &lock.debs {
        add(&mut closure, &deb.digest);
    }
    closure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_blobs_lists_config_and_layers() {
        let config = format!("sha256:{}", "a".repeat(64));
        let layer = format!("sha256:{}", "b".repeat(64));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": { "digest": config, "size": 1 },
            "layers": [{ "digest": layer, "size": 2 }],
        });
        let blobs = manifest_blobs(manifest.to_string().as_bytes()).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[1].to_string(), layer);
        assert!(manifest_blobs(b"{\"manifests\": []}").is_none());
    }
}
