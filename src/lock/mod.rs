//! Pins and the lock: what a profile needs from outside, and `kiln.lock`, which pins it.
//!
//! `requested` gathers what the profile asks for (its pin sets, its Helm releases' charts,
//! the base OS with every node's packages); `check` compares that with the lock and names
//! each difference (`--locked`). Resolving what is unpinned needs the network and lives in
//! `fetch`; this module only decides what must be pinned and whether the lock covers it.

pub mod closure;
pub mod file;
pub mod pins;

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostic, Findings};
use crate::profile::source::Origin;
use crate::profile::ValidCluster;
use file::{LockFile, LockedBase};
use pins::{ChartPin, FilePin, ImagePin, SnapPin};

/// Everything a profile asks to have pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// Images by reference.
    pub images: BTreeMap<String, ImagePin>,
    /// Charts by (name, version, repository).
    pub charts: BTreeMap<(String, String, String), ChartPin>,
    /// Snaps by name.
    pub snaps: BTreeMap<String, SnapPin>,
    /// Files by name.
    pub files: BTreeMap<String, FilePin>,
    /// Images kiln builds, by name.
    pub derived: BTreeMap<String, pins::DerivedPin>,
    /// The base OS with every package any node needs.
    pub base: Option<LockedBase>,
    /// The archive mirror of the base-OS set, if it names one (else the host's sources).
    pub base_mirror: Option<String>,
}

/// What a profile asks to have pinned: its sets, its releases' charts, its base OS.
pub fn requested(cluster: &ValidCluster) -> Result<Requested, Findings> {
    let names: Vec<(String, Origin)> = cluster
        .settings
        .cluster
        .images
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let index = index.to_string();
            let origin = cluster
                .cluster_tree
                .origin_near(&["cluster", "images", &index])
                .clone();
            (name.clone(), origin)
        })
        .collect();
    let sets = pins::load_sets(&cluster.profile_dir, &names)?;
    let mut requested = Requested::default();
    let mut findings = Vec::new();
    let mut base_set: Option<&str> = None;
    for loaded in &sets {
        for image in &loaded.set.images {
            match requested.images.get_mut(&image.name) {
                Some(existing) => {
                    if existing.digest.is_some()
                        && image.digest.is_some()
                        && existing.digest != image.digest
                    {
                        findings.push(conflict(
                            format!(
                                "image `{}` is pinned to two digests by different sets",
                                image.name
                            ),
                            &loaded.path,
                        ));
                    }
                    let platforms: BTreeSet<String> = existing
                        .platforms
                        .iter()
                        .chain(&image.platforms)
                        .cloned()
                        .collect();
                    existing.platforms = platforms.into_iter().collect();
                    existing.digest = existing.digest.clone().or_else(|| image.digest.clone());
                }
                None => {
                    let mut image = image.clone();
                    image.platforms.sort();
                    image.platforms.dedup();
                    requested.images.insert(image.name.clone(), image);
                }
            }
        }
        for chart in &loaded.set.charts {
            let key = (
                chart.name.clone(),
                chart.version.clone(),
                chart.repository.clone(),
            );
            requested.charts.entry(key).or_insert_with(|| chart.clone());
        }
        for snap in &loaded.set.snaps {
            if let Some(existing) = requested.snaps.get(&snap.name) {
                if existing != snap {
                    findings.push(conflict(
                        format!("snap `{}` is pinned differently by two sets", snap.name),
                        &loaded.path,
                    ));
                }
            }
            requested.snaps.insert(snap.name.clone(), snap.clone());
        }
        for file in &loaded.set.files {
            if let Some(existing) = requested.files.get(&file.name) {
                if existing != file {
                    findings.push(conflict(
                        format!("file `{}` is pinned differently by two sets", file.name),
                        &loaded.path,
                    ));
                }
            }
            requested.files.insert(file.name.clone(), file.clone());
        }
        for derived in &loaded.set.derived {
            if requested
                .derived
                .insert(derived.name.clone(), derived.clone())
                .is_some()
            {
                findings.push(conflict(
                    format!("image `{}` is derived by two sets", derived.name),
                    &loaded.path,
                ));
            }
        }
        if let Some(base) = &loaded.set.base {
            if let Some(first) = base_set {
                findings.push(conflict(
                    format!(
                        "two base-OS sets: `{first}` and `{}`; a cluster has one base OS",
                        loaded.name
                    ),
                    &loaded.path,
                ));
                continue;
            }
            base_set = Some(&loaded.name);
            let mut packages: BTreeSet<String> = base.packages.iter().cloned().collect();
            for node in &cluster.nodes {
                packages.extend(node.settings.packages.iter().cloned());
            }
            requested.base = Some(LockedBase {
                suite: base.suite.clone(),
                components: base.components.clone(),
                variant: base.variant.clone(),
                packages: packages.into_iter().collect(),
            });
            requested.base_mirror = base.mirror.clone();
        }
    }
    for release in cluster.settings.helm.releases.values() {
        let key = (
            release.chart.clone(),
            release.version.clone(),
            release.repository.clone(),
        );
        requested.charts.entry(key).or_insert_with(|| ChartPin {
            name: release.chart.clone(),
            repository: release.repository.clone(),
            version: release.version.clone(),
            digest: None,
        });
    }
    for derived in requested.derived.values() {
        if derived.from != "scratch" && !requested.images.contains_key(&derived.from) {
            findings.push(
                Diagnostic::error(
                    "pin-conflict",
                    format!(
                        "derived image `{}` is built from `{}`, which no set pins",
                        derived.name, derived.from
                    ),
                )
                .hint("pin the base image in a set as [[image]], or use `from = \"scratch\"`"),
            );
        }
    }
    if findings.is_empty() {
        Ok(requested)
    } else {
        Err(Findings(findings))
    }
}

/// Every difference between what the profile requests and what the lock pins.
pub fn check(requested: &Requested, lock: &LockFile) -> Vec<String> {
    let mut differences = Vec::new();
    let locked_images: BTreeMap<&str, _> = lock
        .images
        .iter()
        .map(|image| (image.name.as_str(), image))
        .collect();
    for (name, image) in &requested.images {
        match locked_images.get(name.as_str()) {
            None => differences.push(format!("image `{name}` is not in the lock")),
            Some(locked) => {
                let platforms: Vec<&str> = locked
                    .platforms
                    .iter()
                    .map(|p| p.platform.as_str())
                    .collect();
                let wanted: Vec<&str> = image.platforms.iter().map(String::as_str).collect();
                if platforms != wanted {
                    differences.push(format!(
                        "image `{name}`: the lock has platforms [{}], the sets ask for [{}]",
                        platforms.join(", "),
                        wanted.join(", ")
                    ));
                }
                if let Some(digest) = &image.digest {
                    if digest != &locked.digest {
                        differences.push(format!(
                            "image `{name}`: pinned to {digest}, the lock has {}",
                            locked.digest
                        ));
                    }
                }
            }
        }
    }
    for name in locked_images.keys() {
        if !requested.images.contains_key(*name) {
            differences.push(format!(
                "the lock pins image `{name}`, which no set asks for"
            ));
        }
    }
    let locked_charts: BTreeSet<(&str, &str, &str)> = lock
        .charts
        .iter()
        .map(|chart| {
            (
                chart.name.as_str(),
                chart.version.as_str(),
                chart.repository.as_str(),
            )
        })
        .collect();
    for ((name, version, repository), chart) in &requested.charts {
        if !locked_charts.contains(&(name.as_str(), version.as_str(), repository.as_str())) {
            differences.push(format!(
                "chart `{name}` {version} from {repository} is not in the lock"
            ));
        } else if let Some(digest) = &chart.digest {
            let locked = lock
                .charts
                .iter()
                .find(|c| c.name == *name && c.version == *version && c.repository == *repository);
            if locked.is_some_and(|locked| &locked.digest != digest) {
                differences.push(format!(
                    "chart `{name}` {version}: pinned to {digest}, the lock differs"
                ));
            }
        }
    }
    for (name, version, repository) in &locked_charts {
        let key = (
            name.to_string(),
            version.to_string(),
            repository.to_string(),
        );
        if !requested.charts.contains_key(&key) {
            differences.push(format!(
                "the lock pins chart `{name}` {version} from {repository}, which nothing asks for"
            ));
        }
    }
    for (name, snap) in &requested.snaps {
        match lock.snaps.iter().find(|locked| &locked.name == name) {
            None => differences.push(format!("snap `{name}` is not in the lock")),
            Some(locked) if locked.channel != snap.channel => differences.push(format!(
                "snap `{name}`: the lock has channel {}, the sets ask for {}",
                locked.channel, snap.channel
            )),
            Some(locked)
                if snap
                    .revision
                    .is_some_and(|revision| revision != locked.revision) =>
            {
                differences.push(format!(
                    "snap `{name}`: the lock has revision {}",
                    locked.revision
                ))
            }
            Some(_) => {}
        }
    }
    for locked in &lock.snaps {
        if !requested.snaps.contains_key(&locked.name) {
            differences.push(format!(
                "the lock pins snap `{}`, which no set asks for",
                locked.name
            ));
        }
    }
    for (name, file) in &requested.files {
        match lock.files.iter().find(|locked| &locked.name == name) {
            None => differences.push(format!("file `{name}` is not in the lock")),
            Some(locked) if locked.url != file.url => differences.push(format!(
                "file `{name}`: the lock fetches {}, the sets name {}",
                locked.url, file.url
            )),
            Some(locked)
                if file
                    .digest
                    .as_ref()
                    .is_some_and(|digest| digest != &locked.digest) =>
            {
                differences.push(format!(
                    "file `{name}`: pinned to another digest than the lock's"
                ))
            }
            Some(_) => {}
        }
    }
    for locked in &lock.files {
        if !requested.files.contains_key(&locked.name) {
            differences.push(format!(
                "the lock pins file `{}`, which no set asks for",
                locked.name
            ));
        }
    }
    match (&requested.base, &lock.base) {
        (Some(wanted), Some(locked)) if wanted != locked => {
            let added: Vec<&String> = wanted
                .packages
                .iter()
                .filter(|p| !locked.packages.contains(p))
                .collect();
            let removed: Vec<&String> = locked
                .packages
                .iter()
                .filter(|p| !wanted.packages.contains(p))
                .collect();
            if wanted.suite != locked.suite
                || wanted.components != locked.components
                || wanted.variant != locked.variant
            {
                differences.push(format!(
                    "base OS: the lock has {} {} ({}), the profile asks for {} {} ({})",
                    locked.suite,
                    locked.components.join(","),
                    locked.variant,
                    wanted.suite,
                    wanted.components.join(","),
                    wanted.variant
                ));
            }
            if !added.is_empty() {
                differences.push(format!(
                    "base OS: packages not in the lock: {}",
                    join(&added)
                ));
            }
            if !removed.is_empty() {
                differences.push(format!(
                    "base OS: the lock has packages nothing asks for: {}",
                    join(&removed)
                ));
            }
        }
        (Some(_), None) => differences.push("the base OS is not in the lock".to_string()),
        (None, Some(_)) => {
            differences.push("the lock pins a base OS, but no set names one".to_string())
        }
        _ => {}
    }
    if requested.base.is_some() && lock.debs.is_empty() {
        differences.push("the lock has no .deb packages for the base OS".to_string());
    }
    differences
}

/// Two sets that pin the same thing differently.
fn conflict(message: String, path: &std::path::Path) -> Diagnostic {
    Diagnostic::error("pin-conflict", message).hint(format!(
        "make the sets agree; the second one is {}",
        crate::profile::source::display_path(path)
    ))
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|item| item.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--locked`: fail, naming each difference, when the profile and the lock disagree.
pub fn require_locked(
    requested: &Requested,
    lock: &LockFile,
    lock_path: &std::path::Path,
) -> Result<(), Findings> {
    let differences = check(requested, lock);
    if differences.is_empty() {
        return Ok(());
    }
    Err(Findings(
        differences
            .into_iter()
            .map(|difference| {
                Diagnostic::error(
                    "lock-mismatch",
                    format!(
                        "{difference} ({})",
                        crate::profile::source::display_path(lock_path)
                    ),
                )
                .hint("run `kiln lock` to update the lock, then review and commit it")
            })
            .collect(),
    ))
}
