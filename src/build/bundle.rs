//! The offline bundle: one byte-identical file with everything a node needs.
//!
//! Members: `manifest.json` (every member with sha256, size, kind and the pin it came
//! from, and the lock), `SHA256SUMS` (what `install.sh` checks first), `kiln.lock`, an SPDX
//! 2.3 SBOM, `install.sh`, the rendered configuration of every node (with secrets left as
//! `@@kiln-secret:NAME@@` placeholders that `install.sh` fills in from a secrets directory),
//! container images as OCI archives that `ctr image import` and MicroK8s' sideload accept,
//! Helm charts, snaps with their assertions, files (driver packages) and, when asked, the
//! base OS's .debs.
//!
//! The bundle is a build step in the store, keyed by the sha256 of its manifest (which
//! names every member's digest) and its compression: the same inputs give the same key and
//! the same bytes, and a second build with nothing changed does nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::build::archive::{self, Compression, Member, Source};
use crate::build::image_archive::{rfc3339, write_image_archive};
use crate::lock::file::{LockFile, LockedFile};
use crate::profile::secrets::Secrets;
use crate::profile::ValidCluster;
use crate::render::context::secret_references;
use crate::render::{render, Rendered};
use crate::store::{Digest, Store};

/// Bump when the bundle's layout or contents change for the same inputs.
pub const STEP_VERSION: u32 = 1;

/// How secrets appear in the bundle's files until `install.sh` fills them in.
pub fn placeholder(name: &str) -> String {
    format!("@@kiln-secret:{name}@@")
}

/// What went wrong building a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A pinned artifact is not in the store.
    #[error("{what} ({digest}) is not in the store: run `kiln fetch` first")]
    Missing {
        /// What it is.
        what: String,
        /// Its digest.
        digest: String,
    },
    /// Rendering failed.
    #[error("{0}")]
    Render(String),
    /// Writing an image archive failed.
    #[error("{0}")]
    Image(String),
    /// Writing the archive failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// File access.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Options of `kiln build bundle`.
#[derive(Clone, Copy, Debug)]
pub struct BundleOptions {
    /// Compression of the whole bundle.
    pub compression: Compression,
    /// Carry the base OS's .debs too.
    pub include_debs: bool,
}

/// A built (or reused) bundle.
#[derive(Debug)]
pub struct BundleReport {
    /// The bundle in the store.
    pub path: PathBuf,
    /// The step key.
    pub key: String,
    /// Whether an earlier build was reused.
    pub reused: bool,
    /// Number of members.
    pub members: usize,
    /// sha256 of the bundle file.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// A planned member with what the manifest says about it.
struct Planned {
    member: Member,
    sha256: String,
    size: u64,
    kind: &'static str,
    pin: Value,
}

fn hex_of(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn bytes_member(
    path: String,
    mode: u32,
    bytes: Vec<u8>,
    kind: &'static str,
    pin: Value,
) -> Planned {
    let sha256 = hex_of(&bytes);
    let size = bytes.len() as u64;
    Planned {
        member: Member {
            path,
            mode,
            expected: Some((sha256.clone(), size)),
            source: Source::Bytes(bytes),
        },
        sha256,
        size,
        kind,
        pin,
    }
}

/// The digest of a pinned blob that is in the store, or `Missing` naming `what`.
pub(crate) fn stored_blob(
    store: &Store,
    digest_text: &str,
    what: &str,
) -> Result<Digest, BundleError> {
    let missing = || BundleError::Missing {
        what: what.to_string(),
        digest: digest_text.to_string(),
    };
    let digest: Digest = digest_text.parse().map_err(|_| missing())?;
    if !store.has_blob(&digest) {
        return Err(missing());
    }
    Ok(digest)
}

fn blob_member(
    store: &Store,
    path: String,
    digest_text: &str,
    size: u64,
    kind: &'static str,
    pin: Value,
) -> Result<Planned, BundleError> {
    let digest = stored_blob(store, digest_text, &path)?;
    let sha256 = digest.hex().to_string();
    Ok(Planned {
        member: Member {
            path,
            mode: 0o644,
            expected: Some((sha256.clone(), size)),
            source: Source::File(store.blob_path(&digest)),
        },
        sha256,
        size,
        kind,
        pin,
    })
}

/// Is `file` an NVIDIA driver package (by its name in the set)? Those go to GPU nodes only.
pub(crate) fn is_nvidia(file: &LockedFile) -> bool {
    file.name.starts_with("nvidia")
}

/// Where a pinned file goes in the bundle: `nvidia/` for driver packages, else `files/`,
/// under the last part of its URL (or its name).
pub(crate) fn file_path(file: &LockedFile) -> String {
    let directory = if is_nvidia(file) { "nvidia" } else { "files" };
    let file_name = file
        .url
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .unwrap_or(&file.name);
    format!("{directory}/{file_name}")
}

/// A file name for an image reference: `quay.io/jupyterhub/k8s-hub:4.3.2` →
/// `quay.io_jupyterhub_k8s-hub_4.3.2.tar`.
pub(crate) fn image_file_name(reference: &str) -> String {
    let safe: String = reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.tar")
}

/// Sort every object's keys: canonical JSON.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> = map
                .iter()
                .map(|(key, value)| (key, canonical(value)))
                .collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(key, value)| (key.clone(), value))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// An SPDX 2.3 JSON SBOM of the bundle's artifacts.
fn sbom(cluster: &str, lock: &LockFile, lock_sha: &str) -> Value {
    let mut packages = Vec::new();
    let mut add = |name: &str,
                   version: &str,
                   digest: &str,
                   location: &str,
                   purl: Option<String>| {
        let index = packages.len() + 1;
        let mut package = json!({
            "SPDXID": format!("SPDXRef-Package-{index}"),
            "name": name,
            "versionInfo": version,
            "downloadLocation": if location.is_empty() { "NOASSERTION" } else { location },
            "filesAnalyzed": false,
            "checksums": [{ "algorithm": "SHA256", "checksumValue": digest.trim_start_matches("sha256:") }],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        if let Some(purl) = purl {
            package["externalRefs"] = json!([{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }]);
        }
        packages.push(package);
    };
    for image in &lock.images {
        let (repository, tag) = image.name.rsplit_once(':').unwrap_or((&image.name, ""));
        add(
            &image.name,
            tag,
            &image.digest,
            repository,
            Some(format!(
                "pkg:oci/{}@{}",
                repository.rsplit('/').next().unwrap_or(repository),
                image.digest.replace(':', "%3A")
            )),
        );
    }
    for chart in &lock.charts {
        add(&chart.name, &chart.version, &chart.digest, &chart.url, None);
    }
    for snap in &lock.snaps {
        add(
            &snap.name,
            &snap.revision.to_string(),
            &snap.digest,
            "",
            None,
        );
    }
    for file in &lock.files {
        add(&file.name, "", &file.digest, &file.url, None);
    }
    for deb in &lock.debs {
        add(
            &deb.name,
            &deb.version,
            &deb.digest,
            "",
            Some(format!(
                "pkg:deb/debian/{}@{}?arch={}",
                deb.name, deb.version, deb.architecture
            )),
        );
    }
    let relationships: Vec<Value> = (1..=packages.len())
        .map(|index| json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": format!("SPDXRef-Package-{index}") }))
        .collect();
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("kiln-bundle-{cluster}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/kiln-bundle-{cluster}-{lock_sha}"),
        "creationInfo": { "created": rfc3339(lock.source_date_epoch), "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))] },
        "packages": packages,
        "relationships": relationships,
    })
}

/// Build the bundle of `cluster` from `lock` and the store (or reuse the one built from the
/// same inputs). `templates` renders `install.sh`.
pub fn build(
    cluster: &ValidCluster,
    lock: &LockFile,
    lock_text: &str,
    store: &Store,
    options: BundleOptions,
    install_script: &dyn Fn(&Value) -> Result<String, String>,
) -> Result<BundleReport, BundleError> {
    let epoch = lock.source_date_epoch;
    let references = secret_references(cluster);
    let mut placeholders = Secrets::default();
    let mut secret_names: Vec<String> = references
        .iter()
        .map(|(reference, _)| reference.name.clone())
        .collect();
    secret_names.sort();
    secret_names.dedup();
    for name in &secret_names {
        placeholders.insert(name, &placeholder(name));
    }
    let rendered: Rendered = render(cluster, &placeholders)
        .map_err(|findings| BundleError::Render(findings.to_string()))?;

    let mut planned: Vec<Planned> = Vec::new();
    let mut nodes = Vec::new();
    for node in &cluster.nodes {
        let tree = &rendered.nodes[&node.name];
        let mut files_list = String::new();
        let mut needs = Vec::new();
        for (path, file) in &tree.files {
            planned.push(bytes_member(
                format!("nodes/{}/{path}", node.name),
                file.mode,
                file.contents.clone(),
                "node-config",
                json!({ "node": node.name }),
            ));
            if path.starts_with("root/") {
                files_list.push_str(&format!("{:04o} {path}\n", file.mode));
            }
            let text = String::from_utf8_lossy(&file.contents);
            for name in &secret_names {
                if text.contains(&placeholder(name)) && !needs.contains(name) {
                    needs.push(name.clone());
                }
            }
        }
        needs.sort();
        planned.push(bytes_member(
            format!("nodes/{}/FILES", node.name),
            0o644,
            files_list.into_bytes(),
            "node-config",
            json!({ "node": node.name }),
        ));
        nodes.push(
            json!({ "name": node.name, "mac": node.settings.mac.to_string(), "secrets": needs }),
        );
    }

    // Image archives are written into the store's tmp (hashed while written) and streamed
    // into the bundle from there.
    let scratch = store
        .root()
        .join("tmp")
        .join(format!("bundle-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&scratch);
    fs_err::create_dir_all(&scratch)?;
    let result = (|| {
        for image in &lock.images {
            let pin = json!({ "image": image.name, "digest": image.digest });
            planned.push(image_member(store, &scratch, image, epoch, "image", pin)?);
        }
        let requested = crate::lock::requested(cluster)
            .map_err(|findings| BundleError::Render(findings.to_string()))?;
        for derived in requested.derived.values() {
            let built = build_derived(cluster, lock, store, derived, epoch)?;
            let pin =
                json!({ "derived": derived.name, "digest": built.digest, "from": derived.from });
            planned.push(image_member(
                store,
                &scratch,
                &built,
                epoch,
                "derived-image",
                pin,
            )?);
        }
        for chart in &lock.charts {
            planned.push(blob_member(
                store,
                format!("charts/{}-{}.tgz", chart.name, chart.version),
                &chart.digest,
                chart.size,
                "chart",
                json!({ "chart": chart.name, "version": chart.version, "digest": chart.digest }),
            )?);
        }
        for snap in &lock.snaps {
            let base = format!("snaps/{}_{}", snap.name, snap.revision);
            planned.push(blob_member(
                store,
                format!("{base}.snap"),
                &snap.digest,
                snap.size,
                "snap",
                json!({ "snap": snap.name, "revision": snap.revision }),
            )?);
            planned.push(blob_member(
                store,
                format!("{base}.assert"),
                &snap.assert_digest,
                snap.assert_size,
                "snap-assertion",
                json!({ "snap": snap.name, "revision": snap.revision }),
            )?);
        }
        for file in &lock.files {
            planned.push(blob_member(
                store,
                file_path(file),
                &file.digest,
                file.size,
                "file",
                json!({ "file": file.name, "digest": file.digest }),
            )?);
        }
        if options.include_debs {
            for deb in &lock.debs {
                let file_name = deb.filename.rsplit('/').next().unwrap_or(&deb.name);
                planned.push(blob_member(
                    store,
                    format!("debs/{file_name}"),
                    &deb.digest,
                    deb.size,
                    "deb",
                    json!({ "deb": deb.name, "version": deb.version }),
                )?);
            }
        }
        let lock_sha = hex_of(lock_text.as_bytes());
        planned.push(bytes_member(
            "kiln.lock".into(),
            0o644,
            lock_text.as_bytes().to_vec(),
            "lock",
            Value::Null,
        ));
        let sbom_text = format!(
            "{}\n",
            serde_json::to_string_pretty(&canonical(&sbom(
                &cluster.settings.cluster.name,
                lock,
                &lock_sha
            )))
            .expect("JSON")
        );
        planned.push(bytes_member(
            "sbom.spdx.json".into(),
            0o644,
            sbom_text.into_bytes(),
            "sbom",
            Value::Null,
        ));
        let script =
            install_script(&json!({ "cluster": cluster.settings.cluster, "nodes": nodes }))
                .map_err(BundleError::Render)?;
        planned.push(bytes_member(
            "install.sh".into(),
            0o755,
            script.into_bytes(),
            "install-script",
            Value::Null,
        ));

        planned.sort_by(|a, b| a.member.path.cmp(&b.member.path));
        let mut sums = String::new();
        for item in &planned {
            sums.push_str(&format!("{}  {}\n", item.sha256, item.member.path));
        }
        // SHA256SUMS (what install.sh checks) lists every member but itself and the
        // manifest; the manifest lists every member but itself.
        planned.push(bytes_member(
            "SHA256SUMS".into(),
            0o644,
            sums.into_bytes(),
            "checksums",
            Value::Null,
        ));
        planned.sort_by(|a, b| a.member.path.cmp(&b.member.path));
        let members_json: Vec<Value> = planned
            .iter()
            .map(|item| json!({ "path": item.member.path, "sha256": item.sha256, "size": item.size, "kind": item.kind, "pin": item.pin }))
            .collect();
        let lock_json: Value = toml::from_str::<toml::Table>(lock_text)
            .map(|table| serde_json::to_value(table).expect("TOML converts to JSON"))
            .unwrap_or(Value::Null);
        let manifest = canonical(&json!({
            "version": 1,
            "cluster": cluster.settings.cluster.name,
            "source_date_epoch": epoch,
            "compression": options.compression.to_string(),
            "members": members_json,
            "lock": lock_json,
        }));
        let manifest_text = format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest).expect("JSON")
        );
        planned.push(bytes_member(
            "manifest.json".into(),
            0o644,
            manifest_text.clone().into_bytes(),
            "manifest",
            Value::Null,
        ));

        let key_input = canonical(&json!({
            "kind": "bundle",
            "step_version": STEP_VERSION,
            "compression": options.compression.to_string(),
            "manifest": hex_of(manifest_text.as_bytes()),
        }));
        let key = hex_of(serde_json::to_string(&key_input).expect("JSON").as_bytes());
        let step_dir = store.root().join("steps").join(format!("{key}-bundle"));
        let file_name = format!("bundle.{}", options.compression.extension());
        let output = step_dir.join(&file_name);
        let members = planned.len();
        if output.is_file() {
            let (sha256, size) = hash_file(&output)?;
            return Ok(BundleReport {
                path: output,
                key,
                reused: true,
                members,
                sha256,
                size,
            });
        }
        let partial = scratch.join(&file_name);
        let mut writer =
            HashingWriter::new(std::io::BufWriter::new(fs_err::File::create(&partial)?));
        archive::write(
            &mut writer,
            options.compression,
            epoch,
            planned.into_iter().map(|item| item.member).collect(),
        )?;
        let (sha256, size) = writer.finish()?;
        fs_err::create_dir_all(&step_dir)?;
        fs_err::rename(&partial, &output)?;
        Ok(BundleReport {
            path: output,
            key,
            reused: false,
            members,
            sha256,
            size,
        })
    })();
    let _ = fs_err::remove_dir_all(&scratch);
    result
}

/// An image as a bundle member: its OCI archive written to `scratch` (hashed while written)
/// and streamed into the bundle from there.
fn image_member(
    store: &Store,
    scratch: &Path,
    image: &crate::lock::file::LockedImage,
    epoch: u64,
    kind: &'static str,
    pin: Value,
) -> Result<Planned, BundleError> {
    let file_name = image_file_name(&image.name);
    let path = scratch.join(&file_name);
    let mut hashing = HashingWriter::new(fs_err::File::create(&path)?);
    write_image_archive(store, image, &mut hashing, epoch)
        .map_err(|error| BundleError::Image(error.to_string()))?;
    let (sha256, size) = hashing.finish()?;
    Ok(Planned {
        member: Member {
            path: format!("images/{file_name}"),
            mode: 0o644,
            expected: Some((sha256.clone(), size)),
            source: Source::File(path),
        },
        sha256,
        size,
        kind,
        pin,
    })
}

/// Build a derived image from its pin: the base from the lock, a layer per .deb of the
/// locked base OS, a layer with the profile's files.
pub(crate) fn build_derived(
    cluster: &ValidCluster,
    lock: &LockFile,
    store: &Store,
    derived: &crate::lock::pins::DerivedPin,
    epoch: u64,
) -> Result<crate::lock::file::LockedImage, BundleError> {
    use crate::build::image_archive::{
        build_derived_image, DerivedConfig, DerivedImage, LayerSource,
    };
    let from = if derived.from == "scratch" {
        None
    } else {
        Some(
            lock.images
                .iter()
                .find(|image| image.name == derived.from)
                .cloned()
                .ok_or_else(|| BundleError::Missing {
                    what: format!(
                        "`{}`, the base of derived image `{}`,",
                        derived.from, derived.name
                    ),
                    digest: "not in kiln.lock".into(),
                })?,
        )
    };
    let mut layers = Vec::new();
    for name in &derived.debs {
        let deb = lock
            .debs
            .iter()
            .find(|deb| &deb.name == name)
            .ok_or_else(|| BundleError::Missing {
                what: format!("package `{name}` of derived image `{}`", derived.name),
                digest:
                    "not in kiln.lock: add it to the base-OS set's packages and run `kiln lock`"
                        .into(),
            })?;
        let digest: Digest = deb.digest.parse().map_err(|_| BundleError::Missing {
            what: format!("package `{name}`"),
            digest: deb.digest.clone(),
        })?;
        if !store.has_blob(&digest) {
            return Err(BundleError::Missing {
                what: format!("package `{name}` of derived image `{}`", derived.name),
                digest: deb.digest.clone(),
            });
        }
        layers.push(LayerSource::Deb(store.blob_path(&digest)));
    }
    if !derived.files.is_empty() {
        let mut files = Vec::new();
        for file in &derived.files {
            let bytes = fs_err::read(cluster.profile_dir.join(&file.source))?;
            files.push((
                file.path.trim_start_matches('/').to_string(),
                file.mode,
                bytes,
            ));
        }
        layers.push(LayerSource::Files(files));
    }
    let spec = DerivedImage {
        name: derived.name.clone(),
        platform: derived.platform.clone(),
        from,
        layers,
        config: DerivedConfig {
            entrypoint: derived.entrypoint.clone(),
            cmd: derived.cmd.clone(),
            env: derived.env.clone(),
            working_dir: None,
        },
    };
    let built = build_derived_image(store, &spec, epoch)
        .map_err(|error| BundleError::Image(error.to_string()))?;
    Ok(built.locked)
}

fn hash_file(path: &Path) -> Result<(String, u64), std::io::Error> {
    let mut file = fs_err::File::open(path)?;
    let mut hashing = HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hashing)?;
    hashing.finish()
}

/// A writer that hashes what passes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(mut self) -> Result<(String, u64), std::io::Error> {
        self.inner.flush()?;
        Ok((format!("{:x}", self.hasher.finalize()), self.size))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_become_file_names() {
        assert_eq!(
            image_file_name("quay.io/jupyterhub/k8s-hub:4.3.2"),
            "quay.io_jupyterhub_k8s-hub_4.3.2.tar"
        );
    }
}

/// One member as found in a bundle file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FoundMember {
    /// Path in the bundle.
    pub path: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Size.
    pub size: u64,
    /// Kind, from the manifest.
    pub kind: String,
}

/// What `kiln bundle verify` checked.
#[derive(Debug, serde::Serialize)]
pub struct Verified {
    /// The bundle's cluster.
    pub cluster: String,
    /// Every member, verified.
    pub members: Vec<FoundMember>,
}

fn refused(index: usize, path: &str, reason: String) -> archive::ArchiveError {
    archive::ArchiveError::Refused {
        index,
        path: path.to_string(),
        reason,
    }
}

/// Read a bundle once, hashing every member, and check it against its manifest: every
/// checksum and size, no unlisted member, no listed member missing, nothing escaping the
/// root. The first problem is an error naming the member and its position.
pub fn verify(path: &Path) -> Result<Verified, archive::ArchiveError> {
    let file = fs_err::File::open(path).map_err(|source| archive::ArchiveError::Read {
        at: format!(" ({})", path.display()),
        source,
    })?;
    let mut found: Vec<(usize, FoundMember)> = Vec::new();
    let mut manifest: Option<Value> = None;
    archive::read(std::io::BufReader::new(file), &mut |entry, reader| {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let mut kept = Vec::new();
        loop {
            let read =
                reader
                    .read(&mut buffer)
                    .map_err(|source| archive::ArchiveError::EntryData {
                        index: entry.index,
                        path: entry.path.clone(),
                        source,
                    })?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
            if entry.path == "manifest.json" && kept.len() < (64 << 20) {
                kept.extend_from_slice(&buffer[..read]);
            }
        }
        if entry.path == "manifest.json" {
            manifest = Some(serde_json::from_slice(&kept).map_err(|error| {
                refused(entry.index, &entry.path, format!("not valid JSON: {error}"))
            })?);
        }
        found.push((
            entry.index,
            FoundMember {
                path: entry.path.clone(),
                sha256: format!("{:x}", hasher.finalize()),
                size,
                kind: String::new(),
            },
        ));
        Ok(())
    })?;
    let manifest = manifest
        .ok_or_else(|| refused(0, "manifest.json", "the bundle has no manifest.json".into()))?;
    let listed: BTreeMap<String, (String, u64, String)> = manifest["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|member| {
            Some((
                member["path"].as_str()?.to_string(),
                (
                    member["sha256"].as_str()?.to_string(),
                    member["size"].as_u64()?,
                    member["kind"].as_str().unwrap_or_default().to_string(),
                ),
            ))
        })
        .collect();
    let mut members = Vec::new();
    for (index, mut member) in found {
        if member.path == "manifest.json" {
            member.kind = "manifest".into();
            members.push(member);
            continue;
        }
        let Some((sha256, size, kind)) = listed.get(&member.path) else {
            return Err(refused(
                index,
                &member.path,
                "is not listed in manifest.json".into(),
            ));
        };
        if *size != member.size {
            return Err(refused(
                index,
                &member.path,
                format!("is {} bytes, manifest.json says {size}", member.size),
            ));
        }
        if *sha256 != member.sha256 {
            return Err(refused(
                index,
                &member.path,
                format!("has sha256 {}, manifest.json says {sha256}", member.sha256),
            ));
        }
        member.kind = kind.clone();
        members.push(member);
    }
    for path in listed.keys() {
        if !members.iter().any(|member| &member.path == path) {
            return Err(refused(
                0,
                path,
                "is listed in manifest.json but missing from the bundle".into(),
            ));
        }
    }
    Ok(Verified {
        cluster: manifest["cluster"].as_str().unwrap_or_default().to_string(),
        members,
    })
}

/// What `kiln store import` added.
#[derive(Debug, Default, serde::Serialize)]
pub struct Imported {
    /// Blobs added to the store.
    pub added: usize,
    /// Blobs the store had already.
    pub present: usize,
}

/// Fill a store from a bundle: verify the whole bundle first (nothing is stored from a bundle
/// that fails), then store its charts, snaps, files, .debs and every blob of its image
/// archives, each verified against its digest as it is written.
pub fn import(path: &Path, store: &Store) -> Result<Imported, BundleError> {
    verify(path)?;
    let mut imported = Imported::default();
    let file = fs_err::File::open(path)?;
    archive::read(std::io::BufReader::new(file), &mut |entry, reader| {
        let blob_kind = ["charts/", "snaps/", "files/", "nvidia/", "debs/"]
            .iter()
            .any(|prefix| entry.path.starts_with(prefix));
        if blob_kind {
            store
                .add_blob(reader)
                .map_err(|error| refused(entry.index, &entry.path, error.to_string()))?;
            imported.added += 1;
        } else if entry.path.starts_with("images/") {
            archive::read(reader, &mut |inner, blob| {
                let Some(hex) = inner.path.strip_prefix("blobs/sha256/") else {
                    return Ok(());
                };
                let digest: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                    refused(
                        inner.index,
                        &inner.path,
                        "is not named by a sha256 digest".into(),
                    )
                })?;
                if store.has_blob(&digest) {
                    imported.present += 1;
                    return Ok(());
                }
                store
                    .write_blob(&digest, Some(inner.size), blob)
                    .map_err(|error| refused(inner.index, &inner.path, error.to_string()))?;
                imported.added += 1;
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(imported)
}
