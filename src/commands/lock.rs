//! `kiln lock`: pin everything the profile requests in `kiln.lock`.

use std::collections::BTreeSet;

use crate::commands::store::{open_store, LOCK_TIMEOUT};
use crate::commands::{CommandError, Globals, LockSettings};
use crate::fetch::artifacts::{resolve_chart, resolve_file, resolve_image, ArtifactError};
use crate::fetch::debian;
use crate::fetch::http::{FetchOptions, HttpClient};
use crate::fetch::oci::{Endpoints, OciClient};
use crate::lock::file::{LockFile, LockedBase, LockedSnap, LOCK_FILE, LOCK_VERSION};
use crate::lock::{check, requested, require_locked, Requested};
use crate::profile::load::cluster_path;
use crate::profile::load_valid;

/// Where artifacts come from: the profile's `[registries.sources]`, then `--mirror`
/// (which wins, coming later).
pub fn sources(
    cluster: &crate::profile::ValidCluster,
    mirrors: &[(String, String)],
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = cluster
        .settings
        .registries
        .sources
        .iter()
        .map(|(name, url)| (name.clone(), url.trim_end_matches('/').to_string()))
        .collect();
    all.extend(mirrors.iter().cloned());
    all
}

/// The endpoints for registries, with rewrites applied in order (later ones win).
pub fn endpoints(mirrors: &[(String, String)]) -> Endpoints {
    mirrors
        .iter()
        .fold(Endpoints::new(), |endpoints, (registry, url)| {
            endpoints.with_mirror(registry.clone(), url.clone())
        })
}

fn failed(what: &str, error: ArtifactError) -> CommandError {
    CommandError::Failed(format!("{what}: {error}"))
}

/// Run `kiln lock`.
pub fn run(globals: &Globals, settings: &LockSettings) -> Result<(), CommandError> {
    let cluster = load_valid(&globals.profile)?;
    let wanted = requested(&cluster)?;
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    let existing = if lock_path.exists() {
        Some(LockFile::read(&lock_path)?)
    } else {
        None
    };
    if globals.locked {
        let Some(existing) = &existing else {
            return Err(CommandError::Failed(format!(
                "--locked: {} does not exist; run `kiln lock`",
                lock_path.display()
            )));
        };
        require_locked(&wanted, existing, &lock_path)?;
        eprintln!("{} is up to date", lock_path.display());
        return Ok(());
    }
    let known = known_names(&wanted);
    for name in &settings.update {
        if !known.contains(name.as_str()) {
            return Err(CommandError::Usage(format!(
                "--update {name}: nothing in this profile is called that; names are image references, chart, snap and file names, and `base`"
            )));
        }
    }
    let updating = |name: &str| settings.update.iter().any(|update| update == name);
    let previous = existing.clone().unwrap_or_default();
    let store = open_store(globals)?;
    let _store_lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let http = HttpClient::new(FetchOptions::default());
    let oci = OciClient::new(&http, endpoints(&sources(&cluster, &settings.mirrors)));
    let mut lock = LockFile {
        version: LOCK_VERSION,
        source_date_epoch: previous.source_date_epoch,
        ..LockFile::default()
    };
    let mut resolved = 0;
    let mut reused = 0;

    for pin in wanted.images.values() {
        let kept = previous.images.iter().find(|image| {
            image.name == pin.name
                && !updating(&pin.name)
                && pin
                    .digest
                    .as_ref()
                    .is_none_or(|digest| digest == &image.digest)
                && image
                    .platforms
                    .iter()
                    .map(|p| p.platform.as_str())
                    .eq(pin.platforms.iter().map(String::as_str))
        });
        match kept {
            Some(image) => {
                lock.images.push(image.clone());
                reused += 1;
            }
            None => {
                eprintln!("resolving image {}", pin.name);
                lock.images
                    .push(resolve_image(&oci, pin).map_err(|error| failed(&pin.name, error))?);
                resolved += 1;
            }
        }
    }
    for pin in wanted.charts.values() {
        let kept = previous.charts.iter().find(|chart| {
            chart.name == pin.name
                && chart.version == pin.version
                && chart.repository == pin.repository
                && !updating(&pin.name)
                && pin
                    .digest
                    .as_ref()
                    .is_none_or(|digest| digest == &chart.digest)
        });
        match kept {
            Some(chart) => {
                lock.charts.push(chart.clone());
                reused += 1;
            }
            None => {
                eprintln!(
                    "resolving chart {} {} from {}",
                    pin.name, pin.version, pin.repository
                );
                lock.charts.push(
                    resolve_chart(&http, &oci, &store, pin)
                        .map_err(|error| failed(&pin.name, error))?,
                );
                resolved += 1;
            }
        }
    }
    for pin in wanted.files.values() {
        let kept = previous.files.iter().find(|file| {
            file.name == pin.name
                && file.url == pin.url
                && !updating(&pin.name)
                && pin
                    .digest
                    .as_ref()
                    .is_none_or(|digest| digest == &file.digest)
        });
        match kept {
            Some(file) => {
                lock.files.push(file.clone());
                reused += 1;
            }
            None => {
                eprintln!("resolving file {} from {}", pin.name, pin.url);
                lock.files.push(
                    resolve_file(&http, &store, pin).map_err(|error| failed(&pin.name, error))?,
                );
                resolved += 1;
            }
        }
    }
    for pin in wanted.snaps.values() {
        match (&pin.revision, &pin.digest, &pin.assert_digest) {
            (Some(revision), Some(digest), Some(assert_digest)) => {
                let size = |text: &str| -> Result<u64, CommandError> {
                    let digest: crate::store::Digest = text.parse().map_err(|error| {
                        CommandError::Failed(format!("snap `{}`: {error}", pin.name))
                    })?;
                    fs_err::metadata(store.blob_path(&digest)).map(|meta| meta.len()).map_err(|_| {
                        CommandError::Failed(format!(
                            "snap `{}`: {} is not in the store, and kiln cannot download snaps yet; the .snap and .assert can be pinned as [[file]] entries meanwhile",
                            pin.name, text
                        ))
                    })
                };
                lock.snaps.push(LockedSnap {
                    name: pin.name.clone(),
                    channel: pin.channel.clone(),
                    revision: *revision,
                    size: size(digest)?,
                    digest: digest.clone(),
                    assert_size: size(assert_digest)?,
                    assert_digest: assert_digest.clone(),
                    classic: pin.classic,
                });
            }
            _ => match previous
                .snaps
                .iter()
                .find(|snap| snap.name == pin.name && snap.channel == pin.channel)
            {
                Some(snap) if !updating(&pin.name) => lock.snaps.push(snap.clone()),
                _ => {
                    return Err(failed(
                        &pin.name,
                        ArtifactError::UnpinnedSnap(pin.name.clone()),
                    ))
                }
            },
        }
    }
    if let Some(base) = &wanted.base {
        let keep =
            previous.base.as_ref() == Some(base) && !previous.debs.is_empty() && !updating("base");
        if keep {
            lock.base = previous.base.clone();
            lock.debs = previous.debs.clone();
            reused += 1;
        } else {
            let (debs, epoch) = resolve_base(&store, base, wanted.base_mirror.as_deref())?;
            lock.base = Some(base.clone());
            lock.debs = debs;
            if lock.source_date_epoch == 0 || updating("base") {
                lock.source_date_epoch = epoch;
            }
            resolved += 1;
        }
    }
    if lock.source_date_epoch == 0 {
        // No base OS to date the lock by: take the time of this first lock. Later runs keep
        // it, so builds from this lock stamp the same time wherever and whenever they run.
        lock.source_date_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
    }
    lock.normalize();
    let differences = check(&wanted, &lock);
    if !differences.is_empty() {
        return Err(CommandError::Internal(format!(
            "the new lock does not cover the profile: {}",
            differences.join("; ")
        )));
    }
    if existing.as_ref().map(LockFile::to_text) == Some(lock.to_text()) {
        eprintln!("{} is up to date ({reused} entries)", lock_path.display());
        return Ok(());
    }
    lock.write(&lock_path)?;
    eprintln!(
        "wrote {}: {resolved} resolved, {reused} kept",
        lock_path.display()
    );
    Ok(())
}

fn known_names(wanted: &Requested) -> BTreeSet<&str> {
    let mut names: BTreeSet<&str> = wanted.images.keys().map(String::as_str).collect();
    names.extend(wanted.charts.values().map(|chart| chart.name.as_str()));
    names.extend(wanted.snaps.keys().map(String::as_str));
    names.extend(wanted.files.keys().map(String::as_str));
    if wanted.base.is_some() {
        names.insert("base");
    }
    names
}

/// Resolve the base OS with mmdebstrap, put every .deb in the store, and date the lock by
/// the archive's Release file.
fn resolve_base(
    store: &crate::store::Store,
    base: &LockedBase,
    mirror: Option<&str>,
) -> Result<(Vec<crate::lock::file::LockedDeb>, u64), CommandError> {
    let work = store
        .root()
        .join("tmp")
        .join(format!("lock-base-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&work);
    fs_err::create_dir_all(&work)?;
    eprintln!(
        "resolving the base OS ({} {}, {} packages) with mmdebstrap",
        base.suite,
        base.variant,
        base.packages.len()
    );
    let result = (|| {
        let resolution = debian::resolve(base, mirror, &work)
            .map_err(|error| CommandError::Failed(error.to_string()))?;
        for deb in &resolution.debs {
            let digest: crate::store::Digest = deb
                .digest
                .parse()
                .map_err(|error| CommandError::Internal(format!("{error}")))?;
            let file = fs_err::File::open(&resolution.files[&deb.name])?;
            store
                .write_blob(&digest, Some(deb.size), file)
                .map_err(|error| CommandError::Internal(error.to_string()))?;
        }
        let epoch = debian::release_date(&work).unwrap_or(0);
        Ok((resolution.debs, epoch))
    })();
    let _ = fs_err::remove_dir_all(&work);
    result
}
