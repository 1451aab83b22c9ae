//! Resolving unpinned artifacts for `kiln lock`, and downloading what a lock names for
//! `kiln fetch`. Everything that touches the network for those commands is here (with
//! `http`, `oci` and `debian`).

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Mutex;

use crate::fetch::http::{FetchError, HttpClient};
use crate::fetch::oci::{
    platform_matches, Endpoints, ImageReference, OciClient, OciError, PlatformManifest,
    ResolvedImage,
};
use crate::lock::closure::closure;
use crate::lock::file::{LockFile, LockedChart, LockedFile, LockedImage, LockedPlatform};
use crate::lock::pins::{ChartPin, FilePin, ImagePin};
use crate::store::{Digest, Store};

/// Why resolving or fetching an artifact failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An image.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A download.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A chart repository's index.
    #[error("chart repository {repository}: {problem}")]
    ChartIndex {
        /// Repository URL.
        repository: String,
        /// What is wrong.
        problem: String,
    },
    /// A lock entry that does not parse.
    #[error("kiln.lock: {0}")]
    Lock(String),
    /// A .deb the archive no longer has.
    #[error(
        "{name} {version} is no longer in the archive ({url} answered {status}): the archive moved on \
         since kiln.lock was written. Run `kiln lock --update base` to pin the packages the archive \
         has now, or fetch from an archive that keeps old versions with `kiln fetch --mirror SUITE=URL`"
    )]
    DebGone {
        /// Package.
        name: String,
        /// Version.
        version: String,
        /// The URL tried.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// A snap that is not fully pinned in its set.
    #[error(
        "snap `{0}`: kiln cannot ask the snap store yet; pin `revision`, `digest`, `assert_digest` \
         (sha256 of the files `snap download` writes) in its set"
    )]
    UnpinnedSnap(String),
}

fn digest(text: &str) -> Result<Digest, ArtifactError> {
    Digest::from_str(text).map_err(|error| ArtifactError::Lock(format!("{text}: {error}")))
}

/// Resolve an image tag to the digests the lock records, keeping the wanted platforms.
pub fn resolve_image(oci: &OciClient<'_>, pin: &ImagePin) -> Result<LockedImage, ArtifactError> {
    let reference = ImageReference::from_str(&pin.name)
        .map_err(|error| ArtifactError::Lock(format!("image `{}`: {error}", pin.name)))?;
    let reference = match &pin.digest {
        Some(pinned) => ImageReference {
            digest: Some(digest(pinned)?),
            ..reference
        },
        None => reference,
    };
    let resolved = oci.resolve(&reference)?;
    let platforms = if resolved.is_index() {
        resolved
            .platforms
            .iter()
            .filter(|manifest| {
                pin.platforms
                    .iter()
                    .any(|wanted| platform_matches(wanted, &manifest.platform))
            })
            .map(locked_platform)
            .collect()
    } else {
        resolved.platforms.iter().map(locked_platform).collect()
    };
    Ok(LockedImage {
        name: pin.name.clone(),
        digest: resolved.digest.to_string(),
        media_type: resolved.media_type,
        size: resolved.size,
        platforms,
    })
}

fn locked_platform(manifest: &PlatformManifest) -> LockedPlatform {
    LockedPlatform {
        platform: manifest.platform.clone(),
        digest: manifest.digest.to_string(),
        media_type: manifest.media_type.clone(),
        size: manifest.size,
    }
}

fn resolved_from_lock(image: &LockedImage) -> Result<ResolvedImage, ArtifactError> {
    let reference = ImageReference::from_str(&image.name)
        .map_err(|error| ArtifactError::Lock(format!("image `{}`: {error}", image.name)))?;
    let platforms = image
        .platforms
        .iter()
        .map(|platform| {
            Ok(PlatformManifest {
                platform: platform.platform.clone(),
                digest: digest(&platform.digest)?,
                media_type: platform.media_type.clone(),
                size: platform.size,
            })
        })
        .collect::<Result<Vec<_>, ArtifactError>>()?;
    Ok(ResolvedImage {
        reference,
        digest: digest(&image.digest)?,
        media_type: image.media_type.clone(),
        size: image.size,
        platforms,
    })
}

/// The OCI reference of a chart in an `oci://` repository.
fn oci_chart_reference(pin_repository: &str, version: &str) -> Option<String> {
    let path = pin_repository.strip_prefix("oci://")?;
    Some(format!("{}:{version}", path.trim_end_matches('/')))
}

/// Helm's media type for a chart archive in an OCI registry.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Resolve a chart to its archive's URL and digest, and put the archive in the store.
pub fn resolve_chart(
    http: &HttpClient,
    oci: &OciClient<'_>,
    store: &Store,
    pin: &ChartPin,
) -> Result<LockedChart, ArtifactError> {
    if let Some(reference) = oci_chart_reference(&pin.repository, &pin.version) {
        let image = ImagePin {
            name: reference.clone(),
            digest: None,
            platforms: Vec::new(),
        };
        let locked = resolve_image(oci, &image)?;
        let resolved = resolved_from_lock(&locked)?;
        oci.pull(store, &resolved, &[], &mut |_, _, _| {})?;
        let manifest =
            fs_err::read(store.blob_path(&resolved.digest)).map_err(FetchError::from_io)?;
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap_or_default();
        let layer = parsed["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|layer| layer["mediaType"] == HELM_CHART_LAYER)
            .ok_or_else(|| ArtifactError::ChartIndex {
                repository: pin.repository.clone(),
                problem: format!("{reference} has no Helm chart layer ({HELM_CHART_LAYER})"),
            })?;
        return Ok(LockedChart {
            name: pin.name.clone(),
            version: pin.version.clone(),
            repository: pin.repository.clone(),
            url: format!("oci://{reference}@{}", locked.digest),
            digest: layer["digest"].as_str().unwrap_or_default().to_string(),
            size: layer["size"].as_u64().unwrap_or_default(),
        });
    }
    let index_url = format!("{}/index.yaml", pin.repository.trim_end_matches('/'));
    let response = http.get_small(&index_url, &[], 64 << 20)?;
    let index: serde_yaml::Value =
        serde_yaml::from_slice(&response.body).map_err(|error| ArtifactError::ChartIndex {
            repository: pin.repository.clone(),
            problem: format!("index.yaml does not parse: {error}"),
        })?;
    let entry = index["entries"][pin.name.as_str()]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|entry| entry["version"].as_str() == Some(pin.version.as_str()))
        .ok_or_else(|| ArtifactError::ChartIndex {
            repository: pin.repository.clone(),
            problem: format!(
                "no version {} of chart `{}` in index.yaml",
                pin.version, pin.name
            ),
        })?;
    let url = entry["urls"][0]
        .as_str()
        .ok_or_else(|| ArtifactError::ChartIndex {
            repository: pin.repository.clone(),
            problem: format!("chart `{}` {} has no URL", pin.name, pin.version),
        })?;
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("{}/{url}", pin.repository.trim_end_matches('/'))
    };
    let expected = match (&pin.digest, entry["digest"].as_str()) {
        (Some(pinned), _) => Some(digest(pinned)?),
        (None, Some(hex)) => Some(digest(&format!("sha256:{hex}"))?),
        (None, None) => None,
    };
    let (digest, size) = match expected {
        Some(expected) => {
            let fetched = http.fetch_blob(store, &url, &expected, None, &[], &mut |_, _| {})?;
            let size = fs_err::metadata(&fetched.path)
                .map_err(FetchError::from_io)?
                .len();
            (expected, size)
        }
        None => http.download_unpinned(store, &url)?,
    };
    Ok(LockedChart {
        name: pin.name.clone(),
        version: pin.version.clone(),
        repository: pin.repository.clone(),
        url,
        digest: digest.to_string(),
        size,
    })
}

/// Resolve a file to its digest and size, and put it in the store.
pub fn resolve_file(
    http: &HttpClient,
    store: &Store,
    pin: &FilePin,
) -> Result<LockedFile, ArtifactError> {
    let (digest, size) = match &pin.digest {
        Some(pinned) => {
            let expected = digest(pinned)?;
            let fetched =
                http.fetch_blob(store, &pin.url, &expected, pin.size, &[], &mut |_, _| {})?;
            let size = fs_err::metadata(&fetched.path)
                .map_err(FetchError::from_io)?
                .len();
            (expected, size)
        }
        None => http.download_unpinned(store, &pin.url)?,
    };
    Ok(LockedFile {
        name: pin.name.clone(),
        url: pin.url.clone(),
        digest: digest.to_string(),
        size,
    })
}

/// One thing `kiln fetch` downloads.
#[derive(Clone, Debug)]
pub enum Task {
    /// An image with the platforms the lock keeps.
    Image(LockedImage),
    /// A blob by URL.
    Blob {
        /// What it is, for messages.
        label: String,
        /// Where from.
        url: String,
        /// Its digest.
        digest: String,
        /// Its size.
        size: u64,
        /// Set for .debs, so that a 404 gets the "archive moved on" message.
        deb: Option<(String, String)>,
    },
}

impl Task {
    /// A short name for progress lines.
    pub fn label(&self) -> &str {
        match self {
            Task::Image(image) => &image.name,
            Task::Blob { label, .. } => label,
        }
    }
}

/// What a lock needs that the store lacks. `deb_archive` maps a suite to its archive URL.
pub fn missing(
    lock: &LockFile,
    store: &Store,
    deb_archive: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Task>, ArtifactError> {
    let mut tasks = Vec::new();
    for image in &lock.images {
        if !image_complete(image, store)? {
            tasks.push(Task::Image(image.clone()));
        }
    }
    for chart in &lock.charts {
        if chart.url.starts_with("oci://") {
            let reference = chart.url.trim_start_matches("oci://");
            let (name, manifest) = reference.split_once('@').unwrap_or((reference, ""));
            let chart_digest = digest(&chart.digest)?;
            if !store.has_blob(&chart_digest) {
                tasks.push(Task::Image(LockedImage {
                    name: name.to_string(),
                    digest: manifest.to_string(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    size: 0,
                    platforms: Vec::new(),
                }));
            }
            continue;
        }
        if !store.has_blob(&digest(&chart.digest)?) {
            tasks.push(Task::Blob {
                label: format!("chart {} {}", chart.name, chart.version),
                url: chart.url.clone(),
                digest: chart.digest.clone(),
                size: chart.size,
                deb: None,
            });
        }
    }
    for file in &lock.files {
        if !store.has_blob(&digest(&file.digest)?) {
            tasks.push(Task::Blob {
                label: format!("file {}", file.name),
                url: file.url.clone(),
                digest: file.digest.clone(),
                size: file.size,
                deb: None,
            });
        }
    }
    for deb in &lock.debs {
        if !store.has_blob(&digest(&deb.digest)?) {
            let url = match deb_archive(&deb.suite) {
                Some(archive) => format!("{}/{}", archive.trim_end_matches('/'), deb.filename),
                None => {
                    return Err(ArtifactError::Lock(format!(
                        "no apt source of this machine serves suite `{}` (for {} {}): add one, or pass --mirror {}=URL",
                        deb.suite, deb.name, deb.version, deb.suite
                    )))
                }
            };
            tasks.push(Task::Blob {
                label: format!("deb {} {}", deb.name, deb.version),
                url,
                digest: deb.digest.clone(),
                size: deb.size,
                deb: Some((deb.name.clone(), deb.version.clone())),
            });
        }
    }
    Ok(tasks)
}

/// Whether an image's manifests and their blobs are all in the store.
fn image_complete(image: &LockedImage, store: &Store) -> Result<bool, ArtifactError> {
    let single = LockFile {
        images: vec![image.clone()],
        ..LockFile::default()
    };
    let closure = closure(&single, store);
    if let Some(invalid) = closure.invalid.first() {
        return Err(ArtifactError::Lock(format!(
            "image `{}`: `{invalid}` is not a digest",
            image.name
        )));
    }
    Ok(closure.unresolved.is_empty() && closure.blobs.iter().all(|blob| store.has_blob(blob)))
}

/// The outcome of one task.
#[derive(Debug)]
pub struct Outcome {
    /// The task's label.
    pub label: String,
    /// Bytes downloaded.
    pub bytes: u64,
    /// The error, if it failed.
    pub error: Option<String>,
}

/// Hears how `kiln fetch` is going (the reporting module draws it).
pub trait Observer: Sync {
    /// A task started; `size` is known for blobs, not for images.
    fn started(&self, label: &str, size: Option<u64>);
    /// Bytes of a task downloaded so far.
    fn progress(&self, label: &str, bytes: u64);
    /// A task ended.
    fn finished(&self, outcome: &Outcome);
}

/// Run tasks on `jobs` threads, telling `observer` as they go.
pub fn run_tasks(
    tasks: Vec<Task>,
    jobs: usize,
    http: &HttpClient,
    endpoints: &Endpoints,
    store: &Store,
    observer: &dyn Observer,
) -> Vec<Outcome> {
    let queue = Mutex::new(tasks.into_iter().rev().collect::<Vec<_>>());
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                let oci = OciClient::new(http, endpoints.clone());
                loop {
                    let Some(task) = queue.lock().expect("queue lock").pop() else {
                        break;
                    };
                    let outcome = run_task(&task, http, &oci, store, observer);
                    observer.finished(&outcome);
                    outcomes.lock().expect("outcomes lock").push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("outcomes lock");
    outcomes.sort_by(|a, b| a.label.cmp(&b.label));
    outcomes
}

fn run_task(
    task: &Task,
    http: &HttpClient,
    oci: &OciClient<'_>,
    store: &Store,
    observer: &dyn Observer,
) -> Outcome {
    let label = task.label().to_string();
    let mut bytes = 0;
    observer.started(
        &label,
        match task {
            Task::Image(_) => None,
            Task::Blob { size, .. } => Some(*size),
        },
    );
    let result: Result<(), ArtifactError> = (|| match task {
        Task::Image(image) => {
            let resolved = resolved_from_lock(image)?;
            let platforms: Vec<String> =
                image.platforms.iter().map(|p| p.platform.clone()).collect();
            let selected: BTreeSet<String> = platforms.into_iter().collect();
            let platforms: Vec<String> = selected.into_iter().collect();
            // Bytes of blobs finished, plus the one under way.
            let (mut finished, mut current, mut current_blob) = (0, 0, String::new());
            oci.pull(store, &resolved, &platforms, &mut |what, done, _| {
                if what != current_blob {
                    finished += current;
                    current_blob = what.to_string();
                }
                current = done;
                observer.progress(&label, finished + current);
            })?;
            bytes = finished + current;
            Ok(())
        }
        Task::Blob {
            url,
            digest: text,
            size,
            deb,
            ..
        } => {
            let expected = digest(text)?;
            let mut progress = |done: u64, _total: Option<u64>| observer.progress(&label, done);
            match http.fetch_blob(store, url, &expected, Some(*size), &[], &mut progress) {
                Ok(fetched) => {
                    bytes = fetched.bytes_downloaded;
                    Ok(())
                }
                Err(FetchError::ClientError { status, .. })
                    if deb.is_some() && (status == 404 || status == 410) =>
                {
                    let (name, version) = deb.clone().expect("checked");
                    Err(ArtifactError::DebGone {
                        name,
                        version,
                        url: url.clone(),
                        status,
                    })
                }
                Err(error) => Err(error.into()),
            }
        }
    })();
    Outcome {
        label,
        bytes,
        error: result.err().map(|error| error.to_string()),
    }
}
