//! Pin sets: `images/*.toml`, the external artifacts a component needs.
//!
//! A set lists container images, Helm charts, snaps, files (such as NVIDIA driver
//! packages) and, for base-OS sets, the Debian/Ubuntu package list. Digests are optional
//! here: `kiln lock` resolves what is unpinned and records everything in `kiln.lock`.
//! Sets are found by name in the profile's `images/` directory, then in each ancestor's
//! `images/` (the repository's shared sets), like roles.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diag::{did_you_mean, Diagnostic, Findings};
use crate::profile::de::from_node;
use crate::profile::load::parse_file;
use crate::profile::source::{display_path, Origin};

/// One `images/NAME.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinSet {
    /// What the set is for (shown by `kiln lock`).
    #[serde(default)]
    pub description: String,
    /// Container images.
    #[serde(default, rename = "image")]
    pub images: Vec<ImagePin>,
    /// Helm charts.
    #[serde(default, rename = "chart")]
    pub charts: Vec<ChartPin>,
    /// Snaps with their assertions.
    #[serde(default, rename = "snap")]
    pub snaps: Vec<SnapPin>,
    /// Plain files.
    #[serde(default, rename = "file")]
    pub files: Vec<FilePin>,
    /// Images kiln builds itself from a pinned image (or scratch) plus files and .debs.
    #[serde(default, rename = "derived")]
    pub derived: Vec<DerivedPin>,
    /// The base operating system (base-OS sets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BasePin>,
}

/// A container image by reference; `digest` pins it (else `kiln lock` resolves the tag).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagePin {
    /// Full reference, e.g. `quay.io/jupyterhub/k8s-hub:4.3.2`.
    pub name: String,
    /// `sha256:…` of the index or manifest, when already known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Platforms to keep.
    #[serde(default = "default_platforms")]
    pub platforms: Vec<String>,
}

fn default_platforms() -> Vec<String> {
    vec!["linux/amd64".to_string()]
}

/// A Helm chart from an HTTP repository index or an `oci://` reference.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChartPin {
    /// Chart name.
    pub name: String,
    /// `https://…` repository (with index.yaml) or `oci://…` reference.
    pub repository: String,
    /// Chart version.
    pub version: String,
    /// `sha256:…` of the chart archive, when already known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A snap and its assertion.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapPin {
    /// Snap name.
    pub name: String,
    /// Channel, e.g. `1.34/stable`.
    pub channel: String,
    /// Revision, when already known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// `sha256:…` of the .snap, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `sha256:…` of the .assert, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert_digest: Option<String>,
    /// Install with `--classic`.
    #[serde(default)]
    pub classic: bool,
}

/// A file by URL.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilePin {
    /// Name it is known by (unique in the lock).
    pub name: String,
    /// Where it comes from.
    pub url: String,
    /// `sha256:…`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// An image kiln builds (Nix's dockerTools, small): a pinned image or `scratch`, plus
/// layers made deterministically from the base OS's pinned .debs and from files of the
/// profile. Built, not fetched: its digest follows from its inputs.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DerivedPin {
    /// The full reference it is imported under, e.g. `kiln.local/demo/dash:1`.
    pub name: String,
    /// `scratch`, or an image pinned by the cluster's sets.
    pub from: String,
    /// The platform it is for.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// Packages of the locked base OS whose files make one layer each, in order.
    #[serde(default)]
    pub debs: Vec<String>,
    /// Files of the profile (relative to the profile directory) put into the image.
    #[serde(default)]
    pub files: Vec<DerivedFile>,
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` environment entries.
    #[serde(default)]
    pub env: Vec<String>,
}

fn default_platform() -> String {
    "linux/amd64".to_string()
}

/// A file put into a derived image.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DerivedFile {
    /// Absolute path in the image.
    pub path: String,
    /// The file, relative to the profile directory.
    pub source: String,
    /// Permission bits.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
}

fn default_file_mode() -> u32 {
    0o644
}

/// The base OS: an archive suite and the packages the root file system holds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BasePin {
    /// Archive suite (`bookworm`, `noble`).
    pub suite: String,
    /// Archive components.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Archive URL; default: the build host's apt sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// mmdebstrap variant.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Packages on every node (nodes' own `packages` are added).
    pub packages: Vec<String>,
}

fn default_components() -> Vec<String> {
    vec!["main".to_string()]
}

fn default_variant() -> String {
    "minbase".to_string()
}

/// A loaded set with its file, for messages.
#[derive(Clone, Debug)]
pub struct LoadedSet {
    /// The set's name (its file stem).
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The pins.
    pub set: PinSet,
}

/// Directories searched for sets: the profile's `images/`, then each ancestor's.
pub fn search_dirs(profile_dir: &Path) -> Vec<PathBuf> {
    let absolute = std::path::absolute(profile_dir).unwrap_or_else(|_| profile_dir.to_path_buf());
    absolute
        .ancestors()
        .map(|dir| dir.join("images"))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Load the named sets.
pub fn load_sets(
    profile_dir: &Path,
    names: &[(String, Origin)],
) -> Result<Vec<LoadedSet>, Findings> {
    let dirs = search_dirs(profile_dir);
    let mut findings = Vec::new();
    let mut sets = Vec::new();
    for (name, origin) in names {
        let found = dirs
            .iter()
            .map(|dir| dir.join(format!("{name}.toml")))
            .find(|path| path.is_file());
        let Some(path) = found else {
            let available = available_sets(&dirs);
            let mut diagnostic =
                Diagnostic::error("unknown-pin-set", format!("no pin set named `{name}`"))
                    .at(origin);
            diagnostic = match did_you_mean(name, available.iter().map(String::as_str)) {
                Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
                None => diagnostic.hint(format!(
                    "sets are files NAME.toml in {}",
                    dirs.iter()
                        .map(|dir| display_path(dir))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            findings.push(diagnostic);
            continue;
        };
        match parse_file(&path).and_then(|(_, tree)| from_node::<PinSet>(&tree)) {
            Ok(set) => sets.push(LoadedSet {
                name: name.clone(),
                path,
                set,
            }),
            Err(diagnostic) => findings.push(diagnostic),
        }
    }
    if findings.is_empty() {
        Ok(sets)
    } else {
        Err(Findings(findings))
    }
}

fn available_sets(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = dirs
        .iter()
        .filter_map(|dir| fs_err::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
