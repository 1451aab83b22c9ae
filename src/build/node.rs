//! The node layer step: what makes one node's disk differ from another's, as a tar of
//! files to lay over the shared root file system.
//!
//! - the node's rendered configuration (`root/…` at its path, `image/…` too: the files only
//!   disk images get, such as the resolver and cloud-init's datasource list);
//! - its NoCloud seed in `/var/lib/cloud/seed/nocloud/`, where cloud-init finds it with no
//!   CIDATA volume and no kernel argument;
//! - what it needs from the bundle, in `/var/lib/kiln/bundle/` where the first-boot
//!   program and `install.sh` put it: container image archives for nodes that run
//!   containerd or MicroK8s, snaps for MicroK8s nodes, charts for the first control plane,
//!   NVIDIA packages for GPU nodes, and the profile's other files.
//!
//! The bundle content goes inside the root file system rather than on a data partition:
//! the first-boot program finds it at the same path whether the node was installed from a
//! disk image, the USB installer or `install.sh`; there is one file system to check and to
//! grow; and nothing is left mounted for the life of the node. The cost, that two nodes do
//! not share the root partition's bytes, is small since each partition is built in seconds.
//!
//! The key is made from the files' paths, modes and digests and from the digests of the
//! pinned artifacts, so the step is rebuilt exactly when one of them changes.

use serde_json::{json, Value};

use crate::build::archive::{self, Compression, Member, Source};
use crate::build::bundle::{build_derived, file_path, image_file_name, is_nvidia, stored_blob};
use crate::build::image_archive::write_image_archive;
use crate::build::step::{StepOutput, Steps};
use crate::build::BuildError;
use crate::lock::file::{LockFile, LockedImage};
use crate::profile::{ValidCluster, ValidNode};
use crate::render::RenderedTree;
use crate::store::{Digest, Store};

/// Bump when the step makes other bytes from the same inputs.
pub const STEP_VERSION: u32 = 1;

/// The output file of the step.
pub const NODE_TAR: &str = "node.tar";

/// Where the node's share of the bundle goes.
pub const BUNDLE_DIR: &str = "var/lib/kiln/bundle";

/// Where cloud-init's NoCloud datasource reads a seed from the root file system.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud";

/// One file of the layer, before it is written.
enum Content {
    Bytes(Vec<u8>),
    Blob(Digest),
    Image(LockedImage),
}

struct LayerFile {
    path: String,
    mode: u32,
    content: Content,
    /// What the key knows of it.
    pin: Value,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// The layer's files: configuration, seed and bundle share.
fn plan(
    cluster: &ValidCluster,
    lock: &LockFile,
    store: &Store,
    node: &ValidNode,
    tree: &RenderedTree,
) -> Result<Vec<LayerFile>, BuildError> {
    let mut files = Vec::new();
    for (path, file) in &tree.files {
        let target = if let Some(rest) = path.strip_prefix("root/") {
            rest.to_string()
        } else if let Some(rest) = path.strip_prefix("image/") {
            rest.to_string()
        } else if let Some(rest) = path.strip_prefix("cloud-init/") {
            format!("{SEED_DIR}/{rest}")
        } else {
            continue;
        };
        files.push(LayerFile {
            pin: json!({ "sha256": sha256_hex(&file.contents) }),
            path: target,
            mode: file.mode,
            content: Content::Bytes(file.contents.clone()),
        });
    }
    let settings = &node.settings;
    let epoch = lock.source_date_epoch;
    if settings.containerd || settings.kubernetes.is_some() {
        for image in &lock.images {
            files.push(LayerFile {
                path: format!("{BUNDLE_DIR}/images/{}", image_file_name(&image.name)),
                mode: 0o644,
                pin: json!({ "image": image.name, "digest": image.digest }),
                content: Content::Image(image.clone()),
            });
        }
        let requested = crate::lock::requested(cluster)
            .map_err(|findings| BuildError::Failed(findings.to_string()))?;
        for derived in requested.derived.values() {
            let built = build_derived(cluster, lock, store, derived, epoch)?;
            files.push(LayerFile {
                path: format!("{BUNDLE_DIR}/images/{}", image_file_name(&built.name)),
                mode: 0o644,
                pin: json!({ "derived": built.name, "digest": built.digest }),
                content: Content::Image(built),
            });
        }
    }
    let mut blob = |path: String, digest: &str, what: &str| -> Result<(), BuildError> {
        let parsed = stored_blob(store, digest, what)?;
        files.push(LayerFile {
            path,
            mode: 0o644,
            pin: json!({ "digest": digest }),
            content: Content::Blob(parsed),
        });
        Ok(())
    };
    if settings.kubernetes.is_some() {
        for snap in &lock.snaps {
            let base = format!("{BUNDLE_DIR}/snaps/{}_{}", snap.name, snap.revision);
            blob(format!("{base}.snap"), &snap.digest, &snap.name)?;
            blob(format!("{base}.assert"), &snap.assert_digest, &snap.name)?;
        }
    }
    let first_control_plane = cluster
        .first_control_plane()
        .is_some_and(|first| first.name == node.name);
    if first_control_plane {
        for chart in &lock.charts {
            blob(
                format!("{BUNDLE_DIR}/charts/{}-{}.tgz", chart.name, chart.version),
                &chart.digest,
                &chart.name,
            )?;
        }
    }
    for file in &lock.files {
        if is_nvidia(file) && settings.gpu.is_none() {
            continue;
        }
        blob(
            format!("{BUNDLE_DIR}/{}", file_path(file)),
            &file.digest,
            &file.name,
        )?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Build (or reuse) the layer of `node`.
pub fn build(
    steps: &Steps,
    cluster: &ValidCluster,
    lock: &LockFile,
    store: &Store,
    node: &ValidNode,
    tree: &RenderedTree,
) -> Result<StepOutput, BuildError> {
    let files = plan(cluster, lock, store, node, tree)?;
    let listed: Vec<Value> = files
        .iter()
        .map(|file| json!({ "path": file.path, "mode": file.mode, "pin": file.pin }))
        .collect();
    let inputs = json!({
        "version": STEP_VERSION,
        "image_archive_version": crate::build::bundle::STEP_VERSION,
        "node": node.name,
        "source_date_epoch": lock.source_date_epoch,
        "files": listed,
    });
    let epoch = lock.source_date_epoch;
    steps.run(
        "node",
        &format!("node-{}", node.name),
        inputs,
        |out, work, _key| {
            let mut members = Vec::new();
            for (index, file) in files.into_iter().enumerate() {
                let source = match file.content {
                    Content::Bytes(bytes) => Source::Bytes(bytes),
                    Content::Blob(digest) => Source::File(store.blob_path(&digest)),
                    Content::Image(image) => {
                        let path = work.join(format!("image-{index}.tar"));
                        let mut writer = std::io::BufWriter::new(fs_err::File::create(&path)?);
                        write_image_archive(store, &image, &mut writer, epoch)
                            .map_err(|error| BuildError::Failed(error.to_string()))?;
                        std::io::Write::flush(&mut writer)?;
                        Source::File(path)
                    }
                };
                members.push(Member {
                    path: file.path,
                    mode: file.mode,
                    expected: None,
                    source,
                });
            }
            let mut writer = std::io::BufWriter::new(fs_err::File::create(out.join(NODE_TAR))?);
            archive::write(&mut writer, Compression::None, epoch, members)?;
            std::io::Write::flush(&mut writer)?;
            Ok(())
        },
    )
}
