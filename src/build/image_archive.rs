//! Container images as files: OCI archives that containerd imports under their full names,
//! and small images that kiln derives itself (Nix's dockerTools, done small).
//!
//! # The archive ([`write_image_archive`])
//!
//! An uncompressed tar holding an OCI image layout: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>` for the image's top-level index or manifest, the platform manifests
//! the lock keeps, their configs and their layers, all streamed from the store. The one
//! entry of `index.json` points at the top-level digest the registry served and carries two
//! annotations:
//!
//! - `io.containerd.image.name`: the full reference (`registry/repository:tag`). containerd's
//!   importer (`ctr images import`, and so MicroK8s' sideload directory and `microk8s images
//!   import`) names the image with it, and keeps the registry's digest, because the bytes
//!   of the manifest or index are the registry's own. (A docker-archive would carry the name
//!   too, but containerd rewrites its manifest, so the digest would no longer match.)
//! - `org.opencontainers.image.ref.name`: the tag, for OCI tools (`skopeo`, `oras`).
//!
//! When the top level is an index naming more platforms than the lock keeps, the index is
//! written unchanged (so the digest stays the registry's) and only the kept platforms' blobs
//! come along. containerd imports such an archive for a platform the lock keeps (the
//! default, the host's, or `--platform`): its importer walks the index through a platform
//! filter and never looks for the other platforms' manifests. `ctr images import
//! --all-platforms` does look for them, and fails: MicroK8s never passes it.
//!
//! The tar is deterministic: members sorted by path (`blobs/`, `blobs/sha256/`, the blobs by
//! digest, `index.json`, `oci-layout`), ustar headers with owner 0:0 and no owner names,
//! mtime = the epoch, mode 0644 for files and 0755 for the two directories, and no
//! compression (layers are compressed already). Blobs are re-hashed while they are streamed,
//! so a damaged store gives an error instead of an archive containerd would reject.
//!
//! # Derived images ([`build_derived_image`])
//!
//! An image made of an optional pinned base and layers kiln builds from files or from the
//! contents of a `.deb`. Every layer is a deterministic tar (sorted, parents included,
//! owner 0:0, mtime = the epoch, permission bits kept, hard links stored as copies) gzip'd
//! with mtime 0, no file name and a fixed level; the config is canonical JSON (keys sorted)
//! whose only times are the epoch. So the same inputs give the same digests on any machine,
//! in any time zone, from any directory. The layer digests depend on flate2's compressor
//! (pinned by Cargo.lock): a change of flate2 that changes its output changes them too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use crate::fetch::oci::{
    platform_matches, ImageReference, ReferenceError, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_INDEX, OCI_MANIFEST,
};
use crate::lock::file::{LockedImage, LockedPlatform};
use crate::store::{Digest, DigestError, Store, StoreError};

/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip'd layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The index annotation containerd names an imported image with.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference's tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Largest manifest or index read (registries may refuse more than 4 MiB).
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest image config read.
const CONFIG_LIMIT: u64 = 16 * 1024 * 1024;
/// Mode of files in the archive.
const FILE_MODE: u32 = 0o644;
/// Mode of directories in the archive and of the parent directories kiln adds to layers.
const DIR_MODE: u32 = 0o755;
/// gzip level of derived layers. Fixed: it is part of what decides their digests.
const GZIP_LEVEL: u32 = 6;

/// Why an image archive or a derived image could not be made. Every message names the
/// image and, where one is concerned, the blob.
#[derive(Debug, thiserror::Error)]
pub enum ImageArchiveError {
    /// The image's name is not an image reference.
    #[error("image {image}: {source}")]
    Reference {
        /// The image, as named.
        image: String,
        /// Why it does not parse.
        source: ReferenceError,
    },
    /// A digest in the lock (or a manifest) does not parse.
    #[error("image {image}: the digest `{digest}` of its {what} is not valid: {source}")]
    Digest {
        /// The image.
        image: String,
        /// What the digest names.
        what: String,
        /// The text.
        digest: String,
        /// Why it does not parse.
        source: DigestError,
    },
    /// A blob the image needs is not in the store.
    #[error(
        "image {image}: its {what} {digest} is not in the store ({}); run `kiln fetch` first",
        path.display()
    )]
    MissingBlob {
        /// The image.
        image: String,
        /// What the blob is (manifest, config, layer, ...).
        what: String,
        /// The blob.
        digest: Digest,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob in the store does not match its name or its descriptor.
    #[error(
        "image {image}: its {what} {digest} in the store is damaged: {problem}; run \
         `kiln store verify`, then `kiln fetch` to fetch it again"
    )]
    CorruptBlob {
        /// The image.
        image: String,
        /// What the blob is.
        what: String,
        /// The blob.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// A manifest, index or config is not what it should be.
    #[error("image {image}: its {what} {digest} is not usable: {problem}")]
    Invalid {
        /// The image.
        image: String,
        /// What the blob is.
        what: String,
        /// The blob.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The lock and the store's manifests disagree, or the request cannot be met.
    #[error("image {image}: {problem}")]
    Mismatch {
        /// The image.
        image: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading a blob from the store failed.
    #[error("image {image}: reading its {what} {digest} from {}: {source}", path.display())]
    Read {
        /// The image.
        image: String,
        /// What the blob is.
        what: String,
        /// The blob.
        digest: Digest,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Writing the archive failed.
    #[error("image {image}: writing its archive failed at `{member}`: {source}")]
    Write {
        /// The image.
        image: String,
        /// The member being written.
        member: String,
        /// What went wrong.
        source: io::Error,
    },
    /// Adding a built blob to the store failed.
    #[error("image {image}: storing its {what} failed: {source}")]
    Store {
        /// The image.
        image: String,
        /// What was being stored.
        what: String,
        /// The store's error.
        source: StoreError,
    },
    /// A layer's source is not usable.
    #[error("image {image}: layer {layer}: {problem}")]
    Layer {
        /// The image.
        image: String,
        /// Which layer (1-based, among the derived layers) and its source.
        layer: String,
        /// What is wrong.
        problem: String,
    },
}

/// What [`write_image_archive`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The name containerd imports the image under (`registry/repository:tag`).
    pub image_name: String,
    /// The top-level digest (the registry's), which `ctr images ls` shows.
    pub digest: Digest,
    /// Every blob in the archive, sorted.
    pub blobs: Vec<Digest>,
    /// Bytes written.
    pub size: u64,
}

/// Write `image` (its blobs read from `store`) as an OCI archive to `out`; see the module
/// documentation for the format. `epoch` is the mtime of every member. Returns what was
/// written. On an error, what was written so far is not a usable archive.
pub fn write_image_archive(
    store: &Store,
    image: &LockedImage,
    out: impl Write,
    epoch: u64,
) -> Result<ArchiveInfo, ImageArchiveError> {
    let label = image.name.as_str();
    let (full_name, tag) = containerd_name(label)?;
    let top_digest = parse_digest(label, "top-level manifest", &image.digest)?;
    let top = read_small(
        store,
        label,
        "top-level manifest",
        &top_digest,
        MANIFEST_LIMIT,
    )?;
    if top.len() as u64 != image.size {
        return Err(ImageArchiveError::Mismatch {
            image: label.to_owned(),
            problem: format!(
                "the lock says its top-level manifest {top_digest} is {} bytes, but the blob                  with that digest is {}; the lock was edited by hand? Run `kiln lock` again",
                image.size,
                top.len()
            ),
        });
    }
    let top_kind = document_media_type(label, "top-level manifest", &top_digest, &top)?
        .unwrap_or_else(|| image.media_type.clone());
    if top_kind != image.media_type {
        return Err(ImageArchiveError::Mismatch {
            image: label.to_owned(),
            problem: format!(
                "the lock says its top level {top_digest} is a `{}`, but the blob says `{top_kind}`",
                image.media_type
            ),
        });
    }

    // Small blobs (manifests), kept in memory; large ones (configs, layers), streamed.
    let mut small: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
    let mut large: BTreeMap<Digest, (u64, &'static str)> = BTreeMap::new();
    let manifests: Vec<(Digest, Vec<u8>)> = if is_index(&image.media_type) {
        let entries = index_entries(label, &top_digest, &top)?;
        let kept: Vec<Digest> = if image.platforms.is_empty() {
            entries.iter().map(|entry| entry.digest.clone()).collect()
        } else {
            let mut kept = Vec::new();
            for platform in &image.platforms {
                let digest = parse_digest(
                    label,
                    &format!("{} manifest", platform.platform),
                    &platform.digest,
                )?;
                if !entries.iter().any(|entry| entry.digest == digest) {
                    return Err(ImageArchiveError::Mismatch {
                        image: label.to_owned(),
                        problem: format!(
                            "the lock keeps the {} manifest {digest}, but the index \
                             {top_digest} does not name it; run `kiln lock` again",
                            platform.platform
                        ),
                    });
                }
                kept.push(digest);
            }
            kept
        };
        let mut manifests = Vec::new();
        for digest in kept {
            let bytes = read_small(store, label, "platform manifest", &digest, MANIFEST_LIMIT)?;
            manifests.push((digest, bytes));
        }
        manifests
    } else {
        vec![(top_digest.clone(), top.clone())]
    };
    small.insert(top_digest.clone(), top);
    for (digest, bytes) in manifests {
        let parsed = image_manifest(label, &digest, &bytes)?;
        large.insert(parsed.config.digest, (parsed.config.size, "config"));
        for layer in parsed.layers {
            large.insert(layer.digest, (layer.size, "layer"));
        }
        small.insert(digest, bytes);
    }

    let mut annotations = Map::new();
    annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), json!(full_name));
    if let Some(tag) = &tag {
        annotations.insert(ANNOTATION_REF_NAME.to_owned(), json!(tag));
    }
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": image.media_type,
            "digest": top_digest.to_string(),
            "size": image.size,
            "annotations": annotations,
        }],
    }));

    let write_error = |member: &str, source: io::Error| ImageArchiveError::Write {
        image: label.to_owned(),
        member: member.to_owned(),
        source,
    };
    let mut builder = tar::Builder::new(CountingWriter {
        inner: out,
        count: 0,
    });
    for directory in ["blobs/", "blobs/sha256/"] {
        let mut header = archive_header(EntryType::Directory, 0, DIR_MODE, epoch);
        builder
            .append_data(&mut header, directory, io::empty())
            .map_err(|error| write_error(directory, error))?;
    }
    let digests: BTreeSet<&Digest> = small.keys().chain(large.keys()).collect();
    for digest in &digests {
        let member = format!("blobs/sha256/{}", digest.hex());
        if let Some(bytes) = small.get(*digest) {
            let mut header =
                archive_header(EntryType::Regular, bytes.len() as u64, FILE_MODE, epoch);
            builder
                .append_data(&mut header, &member, bytes.as_slice())
                .map_err(|error| write_error(&member, error))?;
            continue;
        }
        let (size, what) = large[*digest];
        let path = store.blob_path(digest);
        let file = match fs_err::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(ImageArchiveError::MissingBlob {
                    image: label.to_owned(),
                    what: what.to_owned(),
                    digest: (*digest).clone(),
                    path,
                })
            }
            Err(source) => {
                return Err(ImageArchiveError::Read {
                    image: label.to_owned(),
                    what: what.to_owned(),
                    digest: (*digest).clone(),
                    path,
                    source,
                })
            }
        };
        let actual_size = file
            .metadata()
            .map_err(|source| ImageArchiveError::Read {
                image: label.to_owned(),
                what: what.to_owned(),
                digest: (*digest).clone(),
                path: path.clone(),
                source,
            })?
            .len();
        if actual_size != size {
            return Err(ImageArchiveError::CorruptBlob {
                image: label.to_owned(),
                what: what.to_owned(),
                digest: (*digest).clone(),
                problem: format!("it is {actual_size} bytes, but its manifest says {size}"),
            });
        }
        let mut reader = HashingReader::new(file.take(size));
        let mut header = archive_header(EntryType::Regular, size, FILE_MODE, epoch);
        if let Err(error) = builder.append_data(&mut header, &member, &mut reader) {
            return Err(match reader.read_error.take() {
                Some(source) => ImageArchiveError::Read {
                    image: label.to_owned(),
                    what: what.to_owned(),
                    digest: (*digest).clone(),
                    path,
                    source,
                },
                None => write_error(&member, error),
            });
        }
        let (actual, read) = reader.finish();
        if actual != **digest || read != size {
            return Err(ImageArchiveError::CorruptBlob {
                image: label.to_owned(),
                what: what.to_owned(),
                digest: (*digest).clone(),
                problem: format!("its {read} bytes hash to {actual}"),
            });
        }
    }
    let layout = canonical_json(&json!({"imageLayoutVersion": "1.0.0"}));
    for (member, bytes) in [("index.json", &index), ("oci-layout", &layout)] {
        let mut header = archive_header(EntryType::Regular, bytes.len() as u64, FILE_MODE, epoch);
        builder
            .append_data(&mut header, member, bytes.as_slice())
            .map_err(|error| write_error(member, error))?;
    }
    let mut counting = builder
        .into_inner()
        .map_err(|error| write_error("(end of archive)", error))?;
    counting
        .flush()
        .map_err(|error| write_error("(end of archive)", error))?;
    Ok(ArchiveInfo {
        image_name: full_name,
        digest: top_digest,
        blobs: digests.into_iter().cloned().collect(),
        size: counting.count,
    })
}

/// The name containerd should import `name` under, and its tag: `registry/repository:tag`
/// (docker.io's short names spelled out, `latest` when there is neither tag nor digest), or
/// `registry/repository@digest` for a reference with a digest and no tag.
pub fn containerd_name(name: &str) -> Result<(String, Option<String>), ImageArchiveError> {
    let reference =
        ImageReference::from_str(name).map_err(|source| ImageArchiveError::Reference {
            image: name.to_owned(),
            source,
        })?;
    Ok(match (&reference.tag, &reference.digest) {
        (Some(tag), _) => (format!("{}:{tag}", reference.name()), Some(tag.clone())),
        (None, Some(digest)) => (format!("{}@{digest}", reference.name()), None),
        (None, None) => (
            format!("{}:latest", reference.name()),
            Some("latest".to_owned()),
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Derived images

/// An image kiln builds: a base (or nothing) plus layers, with a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedImage {
    /// Full reference, e.g. `kiln.local/demo/hello:1`: the name containerd imports it under.
    pub name: String,
    /// `os/architecture[/variant]` of the image, e.g. `linux/amd64`: written into the config
    /// (containerd unpacks only images for its platform), and the base's platform picked.
    pub platform: String,
    /// The base image, pinned; `None` for an image from scratch.
    pub from: Option<LockedImage>,
    /// Layers added on top of the base's, in order.
    pub layers: Vec<LayerSource>,
    /// What the image runs.
    pub config: DerivedConfig,
}

/// Where a derived layer's files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSource {
    /// Regular files: path in the image, permission bits, contents. Parent directories are
    /// added with mode 0755.
    Files(Vec<(String, u32, Vec<u8>)>),
    /// The files a `.deb` installs (its `data.tar.*`), without running its maintainer
    /// scripts.
    Deb(PathBuf),
}

/// The runtime config of a derived image. Empty fields keep the base's values, except that
/// a new entrypoint also replaces the base's command (as in a Dockerfile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivedConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries; a key the base sets is replaced in place, new keys are appended.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
}

/// What [`build_derived_image`] put in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image's full reference.
    pub name: String,
    /// Digest of the manifest.
    pub manifest: Digest,
    /// Its media type (always the OCI manifest's).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Digest of the config.
    pub config: Digest,
    /// Every layer's digest (the base's first), as the manifest lists them.
    pub layers: Vec<Digest>,
    /// Every layer's diff ID (sha256 of its uncompressed tar), in the same order.
    pub diff_ids: Vec<Digest>,
    /// The image as a lock entry, for [`write_image_archive`].
    pub locked: LockedImage,
}

/// Build `spec` into `store` (layers, config, manifest) and return its digests. `epoch` is
/// the time stamped into layers and config. Same inputs, same digests, on any machine.
pub fn build_derived_image(
    store: &Store,
    spec: &DerivedImage,
    epoch: u64,
) -> Result<BuiltImage, ImageArchiveError> {
    let label = spec.name.as_str();
    containerd_name(label)?;
    let (os, architecture, variant) =
        split_platform(&spec.platform).ok_or_else(|| ImageArchiveError::Mismatch {
            image: label.to_owned(),
            problem: format!(
                "`{}` is not a platform; write it as `os/architecture[/variant]`, e.g. \
                 `linux/amd64`",
                spec.platform
            ),
        })?;

    let mut config = Map::new();
    let mut layers: Vec<Value> = Vec::new();
    let mut layer_digests = Vec::new();
    let mut diff_ids: Vec<Digest> = Vec::new();
    let mut history: Vec<Value> = Vec::new();
    if let Some(base) = &spec.from {
        let parts = base_image(store, label, base, &spec.platform)?;
        config = parts.config;
        diff_ids = parts.diff_ids;
        if let Some(Value::Array(entries)) = config.remove("history") {
            history = entries;
        }
        for layer in parts.layers {
            layers.push(json!({
                "mediaType": oci_layer_media_type(&layer.media_type),
                "digest": layer.digest.to_string(),
                "size": layer.size,
            }));
            layer_digests.push(layer.digest);
        }
    }

    let created = rfc3339(epoch);
    for (index, source) in spec.layers.iter().enumerate() {
        let what = match source {
            LayerSource::Files(_) => format!("{} (files)", index + 1),
            LayerSource::Deb(path) => format!("{} ({})", index + 1, path.display()),
        };
        let layer_error = |problem: String| ImageArchiveError::Layer {
            image: label.to_owned(),
            layer: what.clone(),
            problem,
        };
        let (layer, created_by) = match source {
            LayerSource::Files(files) => {
                let tree = files_tree(files).map_err(&layer_error)?;
                let layer = store_layer(store, label, &what, &tree, None, epoch)?;
                (layer, format!("kiln: {} file(s)", files.len()))
            }
            LayerSource::Deb(path) => {
                let temp = TempFile::create(store, "deb").map_err(|error| {
                    layer_error(format!("making a temp file in the store: {error}"))
                })?;
                extract_deb_data(path, &temp.file).map_err(&layer_error)?;
                let tree = tar_tree(&temp.file).map_err(&layer_error)?;
                let layer = store_layer(store, label, &what, &tree, Some(&temp.file), epoch)?;
                // Not the .deb's name or digest: the image depends on the files it installs,
                // not on how the package was compressed or stamped.
                (layer, "kiln: the files of a .deb".to_owned())
            }
        };
        history.push(json!({"created": created, "created_by": created_by}));
        layers.push(json!({
            "mediaType": OCI_LAYER_GZIP,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }));
        layer_digests.push(layer.digest);
        diff_ids.push(layer.diff_id);
    }

    config.insert("architecture".to_owned(), json!(architecture));
    config.insert("os".to_owned(), json!(os));
    match variant {
        Some(variant) => config.insert("variant".to_owned(), json!(variant)),
        None => config.remove("variant"),
    };
    config.insert("created".to_owned(), json!(created));
    let mut runtime = match config.remove("config") {
        Some(Value::Object(runtime)) => runtime,
        _ => Map::new(),
    };
    apply_runtime_config(&mut runtime, &spec.config);
    config.insert("config".to_owned(), Value::Object(runtime));
    config.insert(
        "rootfs".to_owned(),
        json!({
            "type": "layers",
            "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
    config.insert("history".to_owned(), Value::Array(history));
    let config_bytes = canonical_json(&Value::Object(config));
    let config_digest = add_bytes(store, label, "config", &config_bytes)?;

    let manifest_bytes = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": layers,
    }));
    let manifest = add_bytes(store, label, "manifest", &manifest_bytes)?;
    let size = manifest_bytes.len() as u64;
    let platform = match variant {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    };
    Ok(BuiltImage {
        name: spec.name.clone(),
        manifest: manifest.clone(),
        media_type: OCI_MANIFEST.to_owned(),
        size,
        config: config_digest,
        layers: layer_digests,
        diff_ids,
        locked: LockedImage {
            name: spec.name.clone(),
            digest: manifest.to_string(),
            media_type: OCI_MANIFEST.to_owned(),
            size,
            platforms: vec![LockedPlatform {
                platform,
                digest: manifest.to_string(),
                media_type: OCI_MANIFEST.to_owned(),
                size,
            }],
        },
    })
}

/// Set the fields of `spec` in an image config's `config` object.
fn apply_runtime_config(runtime: &mut Map<String, Value>, spec: &DerivedConfig) {
    if !spec.entrypoint.is_empty() {
        runtime.insert("Entrypoint".to_owned(), json!(spec.entrypoint));
        runtime.remove("Cmd");
    }
    if !spec.cmd.is_empty() {
        runtime.insert("Cmd".to_owned(), json!(spec.cmd));
    }
    if !spec.env.is_empty() {
        let mut env: Vec<String> = match runtime.get("Env") {
            Some(Value::Array(entries)) => entries
                .iter()
                .filter_map(|entry| entry.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for entry in &spec.env {
            let key = entry.split('=').next().unwrap_or_default();
            match env
                .iter_mut()
                .find(|existing| existing.split('=').next() == Some(key))
            {
                Some(existing) => existing.clone_from(entry),
                None => env.push(entry.clone()),
            }
        }
        runtime.insert("Env".to_owned(), json!(env));
    }
    if let Some(directory) = &spec.working_dir {
        runtime.insert("WorkingDir".to_owned(), json!(directory));
    }
}

/// The base image's config (as an object), diff IDs and layers, for `platform`.
struct BaseImage {
    config: Map<String, Value>,
    diff_ids: Vec<Digest>,
    layers: Vec<Descriptor>,
}

fn base_image(
    store: &Store,
    label: &str,
    base: &LockedImage,
    platform: &str,
) -> Result<BaseImage, ImageArchiveError> {
    let base_label = format!("{label} (base {})", base.name);
    let label = base_label.as_str();
    let top_digest = parse_digest(label, "top-level manifest", &base.digest)?;
    let top = read_small(
        store,
        label,
        "top-level manifest",
        &top_digest,
        MANIFEST_LIMIT,
    )?;
    let (digest, bytes) = if is_index(&base.media_type) {
        let entries = index_entries(label, &top_digest, &top)?;
        let candidates: Vec<(String, String)> = if base.platforms.is_empty() {
            entries
                .iter()
                .map(|entry| (entry.platform.clone(), entry.digest.to_string()))
                .collect()
        } else {
            base.platforms
                .iter()
                .map(|entry| (entry.platform.clone(), entry.digest.clone()))
                .collect()
        };
        let Some((_, digest)) = candidates
            .iter()
            .find(|(candidate, _)| platform_matches(platform, candidate))
        else {
            return Err(ImageArchiveError::Mismatch {
                image: label.to_owned(),
                problem: format!(
                    "the base has no {platform} manifest (the lock keeps {}); add the \
                     platform to the base's pin and run `kiln lock`",
                    candidates
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let digest = parse_digest(label, "platform manifest", digest)?;
        let bytes = read_small(store, label, "platform manifest", &digest, MANIFEST_LIMIT)?;
        (digest, bytes)
    } else {
        (top_digest, top)
    };
    let manifest = image_manifest(label, &digest, &bytes)?;
    let config_bytes = read_small(
        store,
        label,
        "config",
        &manifest.config.digest,
        CONFIG_LIMIT,
    )?;
    let invalid = |problem: String| ImageArchiveError::Invalid {
        image: label.to_owned(),
        what: "config".to_owned(),
        digest: manifest.config.digest.clone(),
        problem,
    };
    let Ok(Value::Object(config)) = serde_json::from_slice::<Value>(&config_bytes) else {
        return Err(invalid("it is not a JSON object".to_owned()));
    };
    let actual = split_platform(&format!(
        "{}/{}{}",
        config
            .get("os")
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
        config
            .get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
        config
            .get("variant")
            .and_then(Value::as_str)
            .map(|variant| format!("/{variant}"))
            .unwrap_or_default()
    ))
    .map(|(os, architecture, variant)| match variant {
        Some(variant) => format!("{os}/{architecture}/{variant}"),
        None => format!("{os}/{architecture}"),
    })
    .unwrap_or_default();
    if !platform_matches(platform, &actual) {
        return Err(ImageArchiveError::Mismatch {
            image: label.to_owned(),
            problem: format!("the base is for {actual}, not {platform}"),
        });
    }
    let diff_ids = config
        .get("rootfs")
        .and_then(|rootfs| rootfs.get("diff_ids"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("it has no `rootfs.diff_ids`".to_owned()))?
        .iter()
        .map(|id| {
            id.as_str()
                .and_then(|id| Digest::from_str(id).ok())
                .ok_or_else(|| invalid(format!("`{id}` in `rootfs.diff_ids` is not a digest")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(invalid(format!(
            "it lists {} diff IDs, but its manifest {digest} has {} layers",
            diff_ids.len(),
            manifest.layers.len()
        )));
    }
    for layer in &manifest.layers {
        if !store.has_blob(&layer.digest) {
            return Err(ImageArchiveError::MissingBlob {
                image: label.to_owned(),
                what: "layer".to_owned(),
                digest: layer.digest.clone(),
                path: store.blob_path(&layer.digest),
            });
        }
    }
    Ok(BaseImage {
        config,
        diff_ids,
        layers: manifest.layers,
    })
}

/// A Docker layer media type's OCI name (same bytes); others unchanged.
fn oci_layer_media_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        other => other,
    }
}

/// `os/architecture[/variant]` split; `None` unless it has two or three non-empty parts.
fn split_platform(platform: &str) -> Option<(&str, &str, Option<&str>)> {
    let parts: Vec<&str> = platform.split('/').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    match parts.as_slice() {
        [os, architecture] => Some((os, architecture, None)),
        [os, architecture, variant] => Some((os, architecture, Some(variant))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Layers

/// One entry of a layer, before it is written.
#[derive(Debug)]
enum Node<'a> {
    Directory { mode: u32 },
    File { mode: u32, data: Data<'a> },
    Symlink { target: String },
}

/// Where a file's bytes are.
#[derive(Clone, Copy, Debug)]
enum Data<'a> {
    Bytes(&'a [u8]),
    /// In the extracted data tar: offset and length.
    Range {
        offset: u64,
        size: u64,
    },
}

impl Data<'_> {
    fn size(&self) -> u64 {
        match self {
            Data::Bytes(bytes) => bytes.len() as u64,
            Data::Range { size, .. } => *size,
        }
    }
}

/// A layer's entries by normalized path (no leading `/` or `./`, no trailing `/`). The
/// ordering of `String`s is the ordering of their bytes, and a directory sorts before
/// everything below it.
type Tree<'a> = BTreeMap<String, Node<'a>>;

/// `path` without a leading `/` or `./`, `.` components or repeated slashes; `None` if it
/// has a `..` component. The root is the empty string.
fn normalize_path(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Add every missing parent directory of every entry (mode 0755); fail when a parent is not
/// a directory.
fn add_parents(tree: &mut Tree<'_>) -> Result<(), String> {
    let paths: Vec<String> = tree.keys().cloned().collect();
    for path in paths {
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            parent = up;
            match tree.get(parent) {
                Some(Node::Directory { .. }) => {}
                Some(_) => {
                    return Err(format!(
                        "`{parent}` is not a directory, but `{path}` is below it"
                    ))
                }
                None => {
                    tree.insert(parent.to_owned(), Node::Directory { mode: DIR_MODE });
                }
            }
        }
    }
    Ok(())
}

fn files_tree(files: &[(String, u32, Vec<u8>)]) -> Result<Tree<'_>, String> {
    let mut tree = Tree::new();
    for (path, mode, contents) in files {
        let normalized = normalize_path(path)
            .filter(|normalized| !normalized.is_empty())
            .ok_or_else(|| format!("`{path}` is not a path for a file in an image"))?;
        if tree
            .insert(
                normalized.clone(),
                Node::File {
                    mode: mode & 0o7777,
                    data: Data::Bytes(contents),
                },
            )
            .is_some()
        {
            return Err(format!("`{normalized}` is given twice"));
        }
    }
    add_parents(&mut tree)?;
    Ok(tree)
}

/// The entries of the uncompressed tar in `file`, with the positions of their contents.
/// Hard links become copies of their target; a path given twice keeps its last entry.
fn tar_tree(file: &fs_err::File) -> Result<Tree<'static>, String> {
    let mut handle = file.file();
    handle
        .seek(SeekFrom::Start(0))
        .map_err(|error| format!("reading the extracted data tar: {error}"))?;
    let mut archive = tar::Archive::new(handle);
    let mut tree = Tree::new();
    let entries = archive
        .entries_with_seek()
        .map_err(|error| format!("reading the data tar: {error}"))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("reading the data tar: {error}"))?;
        let raw_path = entry.path_bytes();
        let text = std::str::from_utf8(&raw_path)
            .map_err(|_| format!("{} is not a UTF-8 path", String::from_utf8_lossy(&raw_path)))?;
        let path = normalize_path(text).ok_or_else(|| format!("`{text}` leaves the root"))?;
        if path.is_empty() {
            continue;
        }
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|error| format!("`{path}`: {error}"))?
            & 0o7777;
        let link = || -> Result<String, String> {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| format!("`{path}` is a link without a target"))?;
            String::from_utf8(target.into_owned())
                .map_err(|_| format!("`{path}` links to a path that is not UTF-8"))
        };
        let node = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => Node::File {
                mode,
                data: Data::Range {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            },
            EntryType::Directory => Node::Directory { mode },
            EntryType::Symlink => Node::Symlink { target: link()? },
            EntryType::Link => {
                let target = link()?;
                let normalized = normalize_path(&target)
                    .ok_or_else(|| format!("`{path}` links to `{target}`, outside the root"))?;
                match tree.get(&normalized) {
                    Some(Node::File { mode, data }) => Node::File {
                        mode: *mode,
                        data: *data,
                    },
                    _ => {
                        return Err(format!(
                            "`{path}` is a hard link to `{target}`, which is not a file before it"
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "`{path}` is a {other:?} entry; only files, directories and links are \
                     supported in image layers"
                ))
            }
        };
        tree.insert(path, node);
    }
    add_parents(&mut tree)?;
    Ok(tree)
}

/// A stored layer.
struct StoredLayer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

/// Write `tree` as a tar, gzip it and add it to the store; the tar is made in a thread and
/// piped into the store, so memory stays bounded.
fn store_layer(
    store: &Store,
    label: &str,
    what: &str,
    tree: &Tree<'_>,
    source: Option<&fs_err::File>,
    epoch: u64,
) -> Result<StoredLayer, ImageArchiveError> {
    let layer_error = |problem: String| ImageArchiveError::Layer {
        image: label.to_owned(),
        layer: what.to_owned(),
        problem,
    };
    let (reader, writer) =
        io::pipe().map_err(|error| layer_error(format!("making a pipe: {error}")))?;
    let finished = AtomicBool::new(false);
    let compressed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| -> io::Result<Digest> {
            let gzip = GzBuilder::new()
                .mtime(0)
                .write(BufWriter::new(writer), Compression::new(GZIP_LEVEL));
            let mut tee = TeeHasher {
                inner: gzip,
                hasher: Sha256::new(),
            };
            write_layer_tar(tree, source, &mut tee, epoch)?;
            let TeeHasher { inner, hasher } = tee;
            let mut buffered = GzEncoder::finish(inner)?;
            buffered.flush()?;
            finished.store(true, Ordering::SeqCst);
            drop(buffered);
            Ok(Digest::from_hasher(hasher))
        });
        let stored = store.add_blob(GuardedReader {
            inner: reader,
            finished: &finished,
            count: &compressed,
        });
        let produced = match producer.join() {
            Ok(produced) => produced,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, stored) {
            (Ok(diff_id), Ok(digest)) => Ok(StoredLayer {
                digest,
                size: compressed.load(Ordering::SeqCst),
                diff_id,
            }),
            // The store stopped reading because the tar failed, or (cannot happen) stored
            // what the guard let through: the tar's error is the one to tell.
            (Err(error), Ok(_) | Err(StoreError::Source { .. })) => {
                Err(layer_error(format!("writing its tar: {error}")))
            }
            (_, Err(source)) => Err(ImageArchiveError::Store {
                image: label.to_owned(),
                what: format!("layer {what}"),
                source,
            }),
        }
    })
}

/// Write the deterministic tar of `tree`; file ranges are read from `source`.
fn write_layer_tar(
    tree: &Tree<'_>,
    source: Option<&fs_err::File>,
    out: &mut dyn Write,
    epoch: u64,
) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    for (path, node) in tree {
        match node {
            Node::Directory { mode } => {
                let mut header = layer_header(EntryType::Directory, 0, *mode, epoch);
                builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Node::Symlink { target } => {
                let mut header = layer_header(EntryType::Symlink, 0, 0o777, epoch);
                builder.append_link(&mut header, path, target)?;
            }
            Node::File { mode, data } => {
                let mut header = layer_header(EntryType::Regular, data.size(), *mode, epoch);
                match data {
                    Data::Bytes(bytes) => builder.append_data(&mut header, path, *bytes)?,
                    Data::Range { offset, size } => {
                        let mut file = source
                            .ok_or_else(|| io::Error::other("a file range without a source"))?
                            .file();
                        file.seek(SeekFrom::Start(*offset))?;
                        let mut reader = file.take(*size);
                        builder.append_data(&mut header, path, &mut reader)?;
                        if reader.limit() != 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("`{path}` is cut short in the data tar"),
                            ));
                        }
                    }
                }
            }
        }
    }
    builder.into_inner()?.flush()
}

/// Extract the uncompressed `data.tar` of the `.deb` at `deb` into `out`. The `ar` container is read here; `data.tar`, `.gz` and `.zst` are
/// decompressed in-process, and `.xz`, `.bz2` and `.lzma` by `dpkg-deb --fsys-tarfile`.
fn extract_deb_data(deb: &Path, out: &fs_err::File) -> Result<(), String> {
    let mut file = fs_err::File::open(deb).map_err(|error| error.to_string())?;
    let not_deb = |why: &str| format!("{} is not a .deb: {why}", deb.display());
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| not_deb("it is shorter than an ar header"))?;
    if &magic != b"!<arch>\n" {
        return Err(not_deb("it does not start with `!<arch>`"));
    }
    let mut first = true;
    loop {
        let mut header = [0u8; 60];
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(not_deb("it has no data.tar member"))
            }
            Err(error) => return Err(error.to_string()),
        }
        if &header[58..60] != b"`\n" {
            return Err(not_deb("an ar member header is damaged"));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| not_deb("an ar member's size is not a number"))?;
        if first && name != "debian-binary" {
            return Err(not_deb("its first member is not `debian-binary`"));
        }
        first = false;
        if let Some(compression) = name.strip_prefix("data.tar") {
            let member = (&mut file).take(size);
            let mut target = out.file();
            target
                .set_len(0)
                .and_then(|()| target.seek(SeekFrom::Start(0)).map(drop))
                .map_err(|error| format!("writing the extracted data tar: {error}"))?;
            let copied = match compression {
                "" => copy_all(member, target),
                ".gz" => copy_all(flate2::read::MultiGzDecoder::new(member), target),
                ".zst" => zstd::stream::read::Decoder::new(member)
                    .and_then(|decoder| copy_all(decoder, target)),
                ".xz" | ".bz2" | ".lzma" => return dpkg_fsys_tarfile(deb, out),
                other => {
                    return Err(format!(
                        "its data member `data.tar{other}` uses a compression kiln does not know"
                    ))
                }
            };
            return copied.map_err(|error| format!("extracting `{name}`: {error}"));
        }
        file.seek(SeekFrom::Current((size + size % 2) as i64))
            .map_err(|error| error.to_string())?;
    }
}

fn copy_all(mut reader: impl Read, mut writer: impl Write) -> io::Result<()> {
    io::copy(&mut reader, &mut writer)?;
    writer.flush()
}

/// `dpkg-deb --fsys-tarfile DEB > out`.
fn dpkg_fsys_tarfile(deb: &Path, out: &fs_err::File) -> Result<(), String> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                "its data.tar is xz/bzip2/lzma-compressed and kiln reads those with `dpkg-deb`, \
                 which is not installed: install the Debian package `dpkg`"
                    .to_owned()
            } else {
                format!("running dpkg-deb: {error}")
            }
        })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let copied = copy_all(&mut stdout, out.file());
    drop(stdout);
    let output = child
        .wait_with_output()
        .map_err(|error| format!("running dpkg-deb: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`dpkg-deb --fsys-tarfile` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    copied.map_err(|error| format!("writing the extracted data tar: {error}"))
}

/// A temp file in the store's `tmp/`, locked (so `kiln gc` leaves it) and removed on drop.
struct TempFile {
    path: PathBuf,
    file: fs_err::File,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    fn create(store: &Store, kind: &str) -> io::Result<TempFile> {
        let directory = store.root().join("tmp");
        fs_err::create_dir_all(&directory)?;
        let path = directory.join(format!(
            "{kind}-{}-{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.file().lock()?;
        Ok(TempFile { path, file })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs_err::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A content descriptor.
#[derive(Clone, Debug)]
struct Descriptor {
    media_type: String,
    digest: Digest,
    size: u64,
}

/// An index entry.
struct IndexEntry {
    digest: Digest,
    platform: String,
}

/// An image manifest's config and layers.
struct ImageManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn parse_digest(label: &str, what: &str, text: &str) -> Result<Digest, ImageArchiveError> {
    Digest::from_str(text).map_err(|source| ImageArchiveError::Digest {
        image: label.to_owned(),
        what: what.to_owned(),
        digest: text.to_owned(),
        source,
    })
}

/// Read a small blob (a manifest or a config) and check its digest.
fn read_small(
    store: &Store,
    label: &str,
    what: &str,
    digest: &Digest,
    limit: u64,
) -> Result<Vec<u8>, ImageArchiveError> {
    let path = store.blob_path(digest);
    let file = match fs_err::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(ImageArchiveError::MissingBlob {
                image: label.to_owned(),
                what: what.to_owned(),
                digest: digest.clone(),
                path,
            })
        }
        Err(source) => {
            return Err(ImageArchiveError::Read {
                image: label.to_owned(),
                what: what.to_owned(),
                digest: digest.clone(),
                path,
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ImageArchiveError::Read {
            image: label.to_owned(),
            what: what.to_owned(),
            digest: digest.clone(),
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(ImageArchiveError::Invalid {
            image: label.to_owned(),
            what: what.to_owned(),
            digest: digest.clone(),
            problem: format!("it is larger than {limit} bytes"),
        });
    }
    let actual = Digest::of_bytes(&bytes);
    if actual != *digest {
        return Err(ImageArchiveError::CorruptBlob {
            image: label.to_owned(),
            what: what.to_owned(),
            digest: digest.clone(),
            problem: format!("its bytes hash to {actual}"),
        });
    }
    Ok(bytes)
}

fn parse_json(
    label: &str,
    what: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Value, ImageArchiveError> {
    serde_json::from_slice(bytes).map_err(|error| ImageArchiveError::Invalid {
        image: label.to_owned(),
        what: what.to_owned(),
        digest: digest.clone(),
        problem: format!("it is not JSON: {error}"),
    })
}

/// The `mediaType` a manifest or index declares, if any.
fn document_media_type(
    label: &str,
    what: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Option<String>, ImageArchiveError> {
    let document = parse_json(label, what, digest, bytes)?;
    Ok(document
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

fn descriptor(
    label: &str,
    what: &str,
    digest: &Digest,
    value: &Value,
) -> Result<Descriptor, ImageArchiveError> {
    let invalid = |problem: String| ImageArchiveError::Invalid {
        image: label.to_owned(),
        what: what.to_owned(),
        digest: digest.clone(),
        problem,
    };
    let text = value
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("a descriptor without a digest: {value}")))?;
    Ok(Descriptor {
        media_type: value
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        digest: Digest::from_str(text).map_err(|error| invalid(error.to_string()))?,
        size: value
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid(format!("a descriptor without a size: {value}")))?,
    })
}

fn index_entries(
    label: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Vec<IndexEntry>, ImageArchiveError> {
    let document = parse_json(label, "index", digest, bytes)?;
    let manifests = document
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| ImageArchiveError::Invalid {
            image: label.to_owned(),
            what: "index".to_owned(),
            digest: digest.clone(),
            problem: "it has no `manifests`".to_owned(),
        })?;
    manifests
        .iter()
        .map(|entry| {
            let platform = entry.get("platform");
            let part = |key: &str| {
                platform
                    .and_then(|platform| platform.get(key))
                    .and_then(Value::as_str)
                    .filter(|text| !text.is_empty())
            };
            let mut name = format!(
                "{}/{}",
                part("os").unwrap_or("unknown"),
                part("architecture").unwrap_or("unknown")
            );
            if let Some(variant) = part("variant") {
                name.push('/');
                name.push_str(variant);
            }
            Ok(IndexEntry {
                digest: descriptor(label, "index", digest, entry)?.digest,
                platform: name,
            })
        })
        .collect()
}

fn image_manifest(
    label: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<ImageManifest, ImageArchiveError> {
    let document = parse_json(label, "manifest", digest, bytes)?;
    let invalid = |problem: &str| ImageArchiveError::Invalid {
        image: label.to_owned(),
        what: "manifest".to_owned(),
        digest: digest.clone(),
        problem: problem.to_owned(),
    };
    if let Some(media_type) = document.get("mediaType").and_then(Value::as_str) {
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            return Err(invalid(&format!(
                "it is a `{media_type}`, not an image manifest (nested indexes are not supported)"
            )));
        }
    }
    let config = document
        .get("config")
        .ok_or_else(|| invalid("it has no `config`"))?;
    let layers = document
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("it has no `layers`"))?;
    Ok(ImageManifest {
        config: descriptor(label, "manifest", digest, config)?,
        layers: layers
            .iter()
            .map(|layer| descriptor(label, "manifest", digest, layer))
            .collect::<Result<_, _>>()?,
    })
}

/// A value as canonical JSON: object keys sorted (recursively), no white space.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.clone(), sorted(value)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value serializes")
}

/// Seconds since 1970 as RFC 3339 in UTC, e.g. `2024-01-01T00:00:00Z`.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let seconds = epoch % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn add_bytes(
    store: &Store,
    label: &str,
    what: &str,
    bytes: &[u8],
) -> Result<Digest, ImageArchiveError> {
    store
        .add_blob(bytes)
        .map_err(|source| ImageArchiveError::Store {
            image: label.to_owned(),
            what: what.to_owned(),
            source,
        })
}

/// A header of the image archive: ustar, owner 0:0 without names, mtime = epoch.
fn archive_header(kind: EntryType, size: u64, mode: u32, epoch: u64) -> Header {
    let mut header = Header::new_ustar();
    fill_header(&mut header, kind, size, mode, epoch);
    header
}

/// A header of a layer: GNU (for long names), owner 0:0 without names, mtime = epoch.
fn layer_header(kind: EntryType, size: u64, mode: u32, epoch: u64) -> Header {
    let mut header = Header::new_gnu();
    fill_header(&mut header, kind, size, mode, epoch);
    header
}

fn fill_header(header: &mut Header, kind: EntryType, size: u64, mode: u32, epoch: u64) {
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read through it and remembers a read error (to tell it from a write
/// error when both surface as one `io::Error`).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    read_error: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            read_error: None,
        }
    }

    fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buffer) {
            Ok(read) => {
                self.hasher.update(&buffer[..read]);
                self.count += read as u64;
                Ok(read)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Err(error),
            Err(error) => {
                self.read_error = Some(io::Error::new(error.kind(), error.to_string()));
                Err(error)
            }
        }
    }
}

/// Hashes what is written through it (a layer's diff ID).
struct TeeHasher<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for TeeHasher<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The store's side of a layer pipe: counts bytes, and turns the end of the pipe into an
/// error unless the producer finished, so a failed layer never becomes a (truncated) blob.
struct GuardedReader<'a> {
    inner: io::PipeReader,
    finished: &'a AtomicBool,
    count: &'a AtomicU64,
}

impl Read for GuardedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        if read == 0 && !buffer.is_empty() && !self.finished.load(Ordering::SeqCst) {
            return Err(io::Error::other("the layer's tar was not finished"));
        }
        self.count.fetch_add(read as u64, Ordering::SeqCst);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let value = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path("./usr//bin/"), Some("usr/bin".to_owned()));
        assert_eq!(normalize_path("/etc/./x"), Some("etc/x".to_owned()));
        assert_eq!(normalize_path("a/../b"), None);
        assert_eq!(normalize_path("./"), Some(String::new()));
    }

    #[test]
    fn containerd_names_are_full() {
        assert_eq!(
            containerd_name("busybox:1.36").unwrap(),
            (
                "docker.io/library/busybox:1.36".to_owned(),
                Some("1.36".to_owned())
            )
        );
        assert_eq!(
            containerd_name("registry.k8s.io/pause").unwrap().0,
            "registry.k8s.io/pause:latest"
        );
    }

    #[test]
    fn parents_are_added_and_checked() {
        let files = vec![("/a/b/c".to_owned(), 0o100_755, b"x".to_vec())];
        let tree = files_tree(&files).unwrap();
        assert_eq!(tree.keys().collect::<Vec<_>>(), ["a", "a/b", "a/b/c"]);
        assert!(matches!(tree["a/b/c"], Node::File { mode: 0o755, .. }));
        let clash = vec![
            ("a".to_owned(), 0o644, Vec::new()),
            ("a/b".to_owned(), 0o644, Vec::new()),
        ];
        assert!(files_tree(&clash).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn env_replaces_and_appends() {
        let mut runtime = Map::new();
        runtime.insert("Env".to_owned(), json!(["PATH=/bin", "A=1"]));
        runtime.insert("Cmd".to_owned(), json!(["sh"]));
        apply_runtime_config(
            &mut runtime,
            &DerivedConfig {
                entrypoint: vec!["/hello".to_owned()],
                cmd: Vec::new(),
                env: vec!["PATH=/usr/bin".to_owned(), "B=2".to_owned()],
                working_dir: Some("/srv".to_owned()),
            },
        );
        assert_eq!(runtime["Env"], json!(["PATH=/usr/bin", "A=1", "B=2"]));
        assert_eq!(runtime["Entrypoint"], json!(["/hello"]));
        assert!(runtime.get("Cmd").is_none());
        assert_eq!(runtime["WorkingDir"], json!("/srv"));
    }
}
