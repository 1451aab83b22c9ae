//! `kiln.lock`: every external input, pinned, with all that is needed to fetch and verify it.
//!
//! Versioned and sorted, so that it diffs well and two `kiln lock` runs that resolve the
//! same things write the same bytes. It lives beside `cluster.toml`, like Cargo.lock.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::profile::de::from_node;
use crate::profile::load::parse_file;

/// The lock format this kiln writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The lock file's name, beside `cluster.toml`.
pub const LOCK_FILE: &str = "kiln.lock";

/// The whole lock.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version.
    pub version: u32,
    /// The time every build of this lock stamps into its outputs (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
    /// The base OS and the exact packages it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<LockedBase>,
    /// Container images.
    #[serde(default, rename = "image", skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<LockedImage>,
    /// Helm charts.
    #[serde(default, rename = "chart", skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<LockedChart>,
    /// Snaps.
    #[serde(default, rename = "snap", skip_serializing_if = "Vec::is_empty")]
    pub snaps: Vec<LockedSnap>,
    /// Files.
    #[serde(default, rename = "file", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<LockedFile>,
    /// The base OS's packages.
    #[serde(default, rename = "deb", skip_serializing_if = "Vec::is_empty")]
    pub debs: Vec<LockedDeb>,
}

/// A pinned container image.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The reference as the sets write it.
    pub name: String,
    /// Digest of the top-level index or manifest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// The platform manifests kept, with their blobs.
    pub platforms: Vec<LockedPlatform>,
}

/// One platform's manifest of an image.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedPlatform {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest size.
    pub size: u64,
}

/// A pinned Helm chart archive.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedChart {
    /// Chart name.
    pub name: String,
    /// Chart version.
    pub version: String,
    /// Repository as the profile names it.
    pub repository: String,
    /// Where the archive is fetched from.
    pub url: String,
    /// `sha256:…` of the archive.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// A pinned snap and its assertion.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedSnap {
    /// Snap name.
    pub name: String,
    /// Channel it was resolved from.
    pub channel: String,
    /// Revision.
    pub revision: u64,
    /// `sha256:…` of the .snap.
    pub digest: String,
    /// Size of the .snap.
    pub size: u64,
    /// `sha256:…` of the .assert.
    pub assert_digest: String,
    /// Size of the .assert.
    pub assert_size: u64,
    /// Install with `--classic`.
    pub classic: bool,
}

/// A pinned file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    /// Name.
    pub name: String,
    /// Source URL.
    pub url: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// The base OS as requested.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedBase {
    /// Suite.
    pub suite: String,
    /// Components.
    pub components: Vec<String>,
    /// mmdebstrap variant.
    pub variant: String,
    /// Every package requested (the set's and the nodes'), sorted.
    pub packages: Vec<String>,
}

/// One .deb of the base OS, with the archive's own metadata (the archive's Priority and
/// Section decide what a minbase install selects, and can differ from the .deb's).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedDeb {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// The archive suite that served it (`bookworm`, `bookworm-security`, ...): which of the
    /// host's apt sources (or which `--mirror SUITE=URL`) it is fetched from.
    pub suite: String,
    /// Path in the archive's pool.
    pub filename: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The archive's Priority.
    pub priority: String,
    /// The archive's Section.
    pub section: String,
}

impl LockFile {
    /// Sort every list, so that the same content always serializes to the same bytes.
    pub fn normalize(&mut self) {
        self.images.sort_by(|a, b| a.name.cmp(&b.name));
        for image in &mut self.images {
            image.platforms.sort_by(|a, b| a.platform.cmp(&b.platform));
        }
        self.charts.sort_by(|a, b| {
            (&a.name, &a.version, &a.repository).cmp(&(&b.name, &b.version, &b.repository))
        });
        self.snaps.sort_by(|a, b| a.name.cmp(&b.name));
        self.files.sort_by(|a, b| a.name.cmp(&b.name));
        self.debs
            .sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
        if let Some(base) = &mut self.base {
            base.packages.sort();
            base.packages.dedup();
        }
    }

    /// The canonical text of the lock.
    pub fn to_text(&self) -> String {
        let mut normalized = self.clone();
        normalized.normalize();
        let body = toml::to_string(&normalized).expect("the lock serializes to TOML");
        format!("# Written by `kiln lock`: every external input, pinned by sha256. Do not edit by hand.\n{body}")
    }

    /// Read a lock file, with positions in errors.
    pub fn read(path: &Path) -> Result<LockFile, Diagnostic> {
        let (_, tree) = parse_file(path)?;
        let lock: LockFile = from_node(&tree)?;
        if lock.version != LOCK_VERSION {
            return Err(Diagnostic::error(
                "lock-version",
                format!(
                    "{} has format version {}; this kiln reads version {LOCK_VERSION}",
                    crate::profile::source::display_path(path),
                    lock.version
                ),
            )
            .hint("run `kiln lock` with this kiln to rewrite it"));
        }
        Ok(lock)
    }

    /// Write the lock (atomically: a temp file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> Result<(), Diagnostic> {
        let io = |error: std::io::Error| Diagnostic::error("io", error.to_string());
        let temporary = path.with_extension("lock.tmp");
        fs_err::write(&temporary, self.to_text()).map_err(io)?;
        fs_err::rename(&temporary, path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockFile {
        LockFile {
            version: LOCK_VERSION,
            source_date_epoch: 1_700_000_000,
            base: None,
            images: vec![
                LockedImage {
                    name: "b.io/x:1".into(),
                    digest: format!("sha256:{}", "1".repeat(64)),
                    media_type: "application/vnd.oci.image.index.v1+json".into(),
                    size: 10,
                    platforms: vec![],
                },
                LockedImage {
                    name: "a.io/x:1".into(),
                    digest: format!("sha256:{}", "2".repeat(64)),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 11,
                    platforms: vec![],
                },
            ],
            ..LockFile::default()
        }
    }

    #[test]
    fn text_is_sorted_and_round_trips() {
        let lock = sample();
        let text = lock.to_text();
        assert!(text.find("a.io/x:1").unwrap() < text.find("b.io/x:1").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        lock.write(&path).unwrap();
        let read = LockFile::read(&path).unwrap();
        let mut expected = lock.clone();
        expected.normalize();
        assert_eq!(read, expected);
        // Same content, same bytes.
        assert_eq!(read.to_text(), text);
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        fs_err::write(&path, "version = 99\nsource_date_epoch = 0\n").unwrap();
        let error = LockFile::read(&path).unwrap_err();
        assert_eq!(error.code, "lock-version");
    }
}
