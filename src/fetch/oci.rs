//! The OCI distribution client: pins container images by digest and pulls them into the store.
//!
//! Why pin: a tag is a pointer the publisher moves. `busybox:1.36` names other bytes after
//! each rebuild of the base image, so an image list written as tags gives a different bundle
//! each month. Tools in this space (Zarf, Hauler) take images by tag and pin only part of
//! the chain, so what the site receives depends on the day the package was made. kiln asks
//! the registry once (`kiln lock`), records the sha256 of the top-level manifest or index it
//! served and of every platform's manifest, and from then on asks only by digest: every byte
//! that comes back, manifests included, is checked against the digest that named it.
//!
//! This module owns what is particular to OCI registries: image references and docker.io's
//! short names, where each registry is reached (an air-gapped site's mirror replaces the
//! address, never the digests), the anonymous bearer-token handshake, and the four manifest
//! media types. Moving bytes (retries, resuming, verification into the store) is
//! [`HttpClient`]'s job; this module never touches the network except through it.
//!
//! Protocol: <https://github.com/opencontainers/distribution-spec/blob/main/spec.md>, token
//! flow: <https://distribution.github.io/distribution/spec/auth/token/>.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::Deserialize;

use crate::fetch::http::{FetchError, HttpClient};
use crate::store::{Digest, Store, StoreError};

/// OCI image index: a list of per-platform manifests.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest: one platform's config and layers.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's manifest list, the index's predecessor.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Docker Hub's name in image references.
const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers: `docker.io` itself serves a web site.
const DOCKER_HUB_ENDPOINT: &str = "https://registry-1.docker.io";
/// The tag a reference without tag or digest means, as in every Docker tool.
const DEFAULT_TAG: &str = "latest";
/// Largest manifest or index accepted. The distribution spec lets registries refuse
/// manifests over 4 MiB, so no image people can pull is larger.
const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest image config read while resolving (to learn a single-platform image's platform).
const CONFIG_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest token response accepted.
const TOKEN_LIMIT: u64 = 1024 * 1024;

/// A container image's name: `registry/repository[:tag][@digest]`, with docker.io's short
/// names spelled out (`busybox` is `docker.io/library/busybox`, as `docker pull` reads it).
///
/// Examples: `docker.io/library/busybox:1.36`, `quay.io/jupyterhub/k8s-hub:4.3.2`,
/// `registry.k8s.io/pause:3.10`, `127.0.0.1:5000/demo/app:1@sha256:<64 hex digits>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// Host and optional port, e.g. `registry.k8s.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Path within the registry, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, if the reference has one.
    pub tag: Option<String>,
    /// The digest, if the reference has one; it wins over the tag when asking the registry.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not an image reference: {reason}; write it like \
     `docker.io/library/busybox:1.36` or `registry.k8s.io/pause:3.10@sha256:<64 hex digits>`"
)]
pub struct ReferenceError {
    /// The string as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageReference {
    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest if there is one (it
    /// cannot move), else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<ImageReference, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        if let Some(character) = input.chars().find(|character| character.is_whitespace()) {
            return Err(fail(format!("it contains white space ({character:?})")));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest.parse::<Digest>().map_err(|error| {
                    fail(format!("the part after `@` is not a digest: {error}"))
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // The tag follows the last `:` unless a `/` comes after it: in
        // `127.0.0.1:5000/demo/app` that `:` separates the port.
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(fail)?;
        }
        // Docker's rule: the first component names a registry when it looks like a host
        // (has a `.` or a port, or is `localhost`); otherwise the image is on Docker Hub.
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, path)
            }
            _ => (DOCKER_HUB, name),
        };
        check_registry(registry).map_err(fail)?;
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        check_repository(&repository).map_err(fail)?;
        let full_name_length = registry.len() + 1 + repository.len();
        if full_name_length > 255 {
            return Err(fail(format!(
                "the name is {full_name_length} characters long, and registries accept at most 255"
            )));
        }
        Ok(ImageReference {
            registry: registry.to_owned(),
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(formatter, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(formatter, "@{digest}")?;
        }
        Ok(())
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (distribution's grammar).
fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("the tag after `:` is empty".to_owned());
    }
    if tag.len() > 128 {
        return Err(format!(
            "the tag is {} characters long; at most 128 are allowed",
            tag.len()
        ));
    }
    let word = |character: char| character.is_ascii_alphanumeric() || character == '_';
    if !tag.starts_with(word) {
        return Err(format!(
            "the tag `{tag}` must start with a letter, a digit or `_`"
        ));
    }
    if let Some(character) = tag
        .chars()
        .find(|&character| !(word(character) || character == '.' || character == '-'))
    {
        return Err(format!(
            "the tag `{tag}` contains `{character}`; tags hold letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(())
}

/// A registry: a host name or IP address, optionally with `:port`.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(bracketed) = registry.strip_prefix('[') {
        // An IPv6 address: `[::1]:5000`.
        let Some((address, rest)) = bracketed.split_once(']') else {
            return Err(format!("the registry `{registry}` has an unclosed `[`"));
        };
        let ipv6 = |character: char| character.is_ascii_hexdigit() || character == ':';
        if address.is_empty() || !address.chars().all(ipv6) {
            return Err(format!("`[{address}]` is not an IPv6 address"));
        }
        let port = (!rest.is_empty()).then(|| rest.strip_prefix(':').unwrap_or(rest));
        (None, port)
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let valid = !label.is_empty()
                && label
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return Err(format!(
                    "the registry `{registry}` is not a host name (labels of letters, digits and \
                     inner `-`, separated by `.`)"
                ));
            }
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|character| character.is_ascii_digit()) {
            return Err(format!(
                "the registry `{registry}` has `{port}` where a port number belongs"
            ));
        }
    }
    Ok(())
}

/// A repository: `/`-separated components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of
/// `-` (distribution's grammar).
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is empty".to_owned());
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(format!(
                "the repository `{repository}` has an empty path component (`//` or a `/` at \
                 an end)"
            ));
        }
        if component
            .chars()
            .any(|character| character.is_ascii_uppercase())
        {
            return Err(format!(
                "the repository `{repository}` has upper-case letters; repository names are \
                 lower case: `{}`",
                repository.to_ascii_lowercase()
            ));
        }
        if let Some(character) = component.chars().find(|&character| {
            !(character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || matches!(character, '.' | '_' | '-'))
        }) {
            return Err(format!(
                "the repository `{repository}` contains `{character}`; repository names hold \
                 lower-case letters, digits, `/` and the separators `.`, `_`, `__`, `-`"
            ));
        }
        let alphanumeric =
            |character: char| character.is_ascii_lowercase() || character.is_ascii_digit();
        let separators_valid = component
            .split(alphanumeric)
            .filter(|separator| !separator.is_empty())
            .all(|separator| {
                matches!(separator, "." | "_" | "__")
                    || separator.chars().all(|character| character == '-')
            });
        if !component.starts_with(alphanumeric)
            || !component.ends_with(alphanumeric)
            || !separators_valid
        {
            return Err(format!(
                "the repository path component `{component}` must start and end with a letter \
                 or digit, with single `.`, `_`, `__` or `-` runs between them"
            ));
        }
    }
    Ok(())
}

/// Where each registry's API answers. By default `https://<registry>` (Docker Hub:
/// `https://registry-1.docker.io`); [`Endpoints::with_mirror`] sends a registry's requests
/// elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Registry (as in image references) → base URL, without a trailing `/`.
    mirrors: BTreeMap<String, String>,
}

impl Endpoints {
    /// Every registry at its own address, over https.
    pub fn new() -> Endpoints {
        Endpoints::default()
    }

    /// Fetch `registry`'s images from `url` (e.g. an air-gapped site's mirror, or
    /// `http://127.0.0.1:5000` for a registry that speaks plain http). Image names and
    /// digests stay those of `registry`: a mirror cannot change what is pulled, since every
    /// byte is checked against its digest. `url` may carry a path prefix; `/v2/...` is
    /// appended to it.
    pub fn with_mirror(mut self, registry: impl Into<String>, url: impl Into<String>) -> Endpoints {
        let url = url.into();
        self.mirrors
            .insert(registry.into(), url.trim_end_matches('/').to_owned());
        self
    }

    /// The base URL `registry`'s API answers at.
    pub fn base_url(&self, registry: &str) -> String {
        if let Some(url) = self.mirrors.get(registry) {
            return url.clone();
        }
        if registry == DOCKER_HUB {
            return DOCKER_HUB_ENDPOINT.to_owned();
        }
        format!("https://{registry}")
    }
}

/// A tag resolved to digests: what `kiln lock` records for an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference as asked for.
    pub reference: ImageReference,
    /// sha256 of the top-level manifest or index, exactly as the registry served it.
    pub digest: Digest,
    /// Its media type (one of the four this module accepts).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Every manifest an index names, in the index's order; for a single manifest, that
    /// manifest itself with the platform its config declares.
    pub platforms: Vec<PlatformManifest>,
}

impl ResolvedImage {
    /// The reference pinned to the resolved digest (tag kept for people to read).
    pub fn pinned(&self) -> ImageReference {
        ImageReference {
            digest: Some(self.digest.clone()),
            ..self.reference.clone()
        }
    }

    /// Whether the top level is an index (or manifest list) rather than a single manifest.
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }
}

/// One platform's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformManifest {
    /// `os/architecture[/variant]`, e.g. `linux/amd64` or `linux/arm/v7`; `unknown/unknown`
    /// for entries that are not images for a platform (such as build attestations).
    pub platform: String,
    /// sha256 of the manifest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a pull put in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// Every blob of the image that was pulled: the top-level manifest or index, the chosen
    /// platform manifests, their configs and layers. Sorted, without duplicates.
    pub blobs: Vec<Digest>,
}

/// Why resolving or pulling an image failed. Every message names the image and the URL.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry has no such manifest (404).
    #[error(
        "image {image}: {url} answered 404: the registry has no {what}; check the repository \
         name and the tag (`skopeo list-tags docker://{name}` lists the tags)"
    )]
    NotFound {
        /// The image.
        image: String,
        /// `registry/repository`.
        name: String,
        /// The URL that answered 404.
        url: String,
        /// What was asked for, e.g. "manifest for tag `1.36`".
        what: String,
    },
    /// The registry lacks a blob that a manifest it serves names.
    #[error(
        "image {image}: {url} answered 404: the registry has no {kind} {digest}, which the \
         image's manifest names; the registry or mirror holds an incomplete copy of the image: \
         push the image to it again (e.g. `skopeo copy --all`)"
    )]
    BlobMissing {
        /// The image.
        image: String,
        /// The URL that answered 404.
        url: String,
        /// `config` or `layer`.
        kind: String,
        /// The blob.
        digest: Digest,
    },
    /// The registry refused even with an anonymous token.
    #[error(
        "image {image}: {url} refused access with an anonymous pull token: the repository may \
         not exist, or it is private and kiln does not support registry credentials yet; check \
         the name, or copy the image to a mirror that allows anonymous pulls"
    )]
    AccessDenied {
        /// The image.
        image: String,
        /// The URL that answered 401 or 403.
        url: String,
    },
    /// The registry (or its token service) wants credentials.
    #[error(
        "image {image}: {url} asks for credentials ({challenge}), and kiln does not support \
         registry credentials yet; pull from a registry or mirror that allows anonymous pulls \
         (configure it as a mirror)"
    )]
    CredentialsRequired {
        /// The image.
        image: String,
        /// The URL that asked.
        url: String,
        /// The challenge, e.g. `Basic realm="registry"`.
        challenge: String,
    },
    /// The bearer-token handshake failed.
    #[error("image {image}: could not get a pull token for {url} from {realm}: {reason}")]
    Token {
        /// The image.
        image: String,
        /// The registry URL that asked for a token.
        url: String,
        /// The token service's URL.
        realm: String,
        /// What went wrong.
        reason: String,
    },
    /// The transfer failed (network, server error, bad status). The source's message
    /// names the URL and what to do.
    #[error("image {image}: {source}")]
    Fetch {
        /// The image.
        image: String,
        /// The URL.
        url: String,
        /// The transfer error.
        source: FetchError,
    },
    /// Bytes did not hash to the digest that named them.
    #[error(
        "image {image}: {url} served bytes whose sha256 is {actual}, but {claimed_by} says \
         {expected}; the registry, the mirror or a proxy in between serves wrong content: \
         try again, and if it persists, check the mirror"
    )]
    DigestMismatch {
        /// The image.
        image: String,
        /// The URL.
        url: String,
        /// The digest that was expected.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
        /// Who named the expected digest, e.g. "the Docker-Content-Digest header".
        claimed_by: String,
    },
    /// The manifest is of a kind this module does not handle.
    #[error(
        "image {image}: {url}: media type `{media_type}` is not supported; kiln reads OCI \
         image indexes and manifests, and Docker manifest lists and v2 schema 2 manifests{hint}"
    )]
    UnsupportedMediaType {
        /// The image.
        image: String,
        /// The URL.
        url: String,
        /// The media type found.
        media_type: String,
        /// What to do, starting with "; ", or empty.
        hint: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("image {image}: the manifest from {url} is not valid: {reason}")]
    InvalidManifest {
        /// The image.
        image: String,
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A requested platform is not in the image.
    #[error(
        "image {image} has no manifest for platform {platform}; it has {available}: pull one \
         of those, or pick an image built for {platform}"
    )]
    PlatformNotFound {
        /// The image.
        image: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the image has, comma-separated.
        available: String,
    },
    /// Writing to (or reading from) the store failed.
    #[error("image {image}: could not store {digest} (from {url}): {source}")]
    Store {
        /// The image.
        image: String,
        /// The blob.
        digest: Digest,
        /// Where it came from.
        url: String,
        /// The store's error.
        source: StoreError,
    },
}

/// Talks the OCI distribution API through an [`HttpClient`], with anonymous bearer tokens
/// cached per registry endpoint and repository.
pub struct OciClient<'a> {
    http: &'a HttpClient,
    endpoints: Endpoints,
    /// (base URL, repository) → bearer token. Keyed by the URL actually reached, so a mirror
    /// and the registry it stands for never share a token.
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// A manifest or index as received, verified and parsed.
struct Manifest {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
    document: ManifestDocument,
}

/// The fields of a manifest or index this module reads; the rest is kept only as bytes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDocument {
    schema_version: Option<u64>,
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

/// A content descriptor: a digest, a size and what it points to.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    platform: Option<Platform>,
}

/// A platform, in an index entry or an image config.
#[derive(Debug, Default, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`, with `unknown` for a missing part.
    fn name(&self) -> String {
        let part = |text: &str| {
            if text.is_empty() {
                "unknown".to_owned()
            } else {
                text.to_owned()
            }
        };
        let mut name = format!("{}/{}", part(&self.os), part(&self.architecture));
        if let Some(variant) = self
            .variant
            .as_deref()
            .filter(|variant| !variant.is_empty())
        {
            name.push('/');
            name.push_str(variant);
        }
        name
    }
}

/// A token service's answer; registries differ in which field they fill.
#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl<'a> OciClient<'a> {
    /// A client that moves bytes with `http` and finds registries through `endpoints`.
    pub fn new(http: &'a HttpClient, endpoints: Endpoints) -> OciClient<'a> {
        OciClient {
            http,
            endpoints,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Resolve a tag (or digest) to the top-level manifest's digest and, for an index or
    /// manifest list, each platform's manifest digest. The digest is the sha256 of the bytes
    /// received; a `Docker-Content-Digest` header that disagrees is an error, as is a
    /// reference digest that does not match. For a single manifest, its config is read to
    /// learn its platform.
    pub fn resolve(&self, image: &ImageReference) -> Result<ResolvedImage, OciError> {
        let reference = image.manifest_reference();
        let manifest = self.fetch_manifest(image, &reference, image.digest.as_ref(), None)?;
        let url = self.manifest_url(image, &reference);
        let platforms = if is_index(&manifest.media_type) {
            index_entries(image, &url, &manifest)?
        } else {
            let config = self.config_bytes(image, &url, &manifest)?;
            vec![PlatformManifest {
                platform: config_platform(image, &url, &config)?,
                digest: manifest.digest.clone(),
                media_type: manifest.media_type.clone(),
                size: manifest.bytes.len() as u64,
            }]
        };
        Ok(ResolvedImage {
            reference: image.clone(),
            digest: manifest.digest,
            media_type: manifest.media_type,
            size: manifest.bytes.len() as u64,
            platforms,
        })
    }

    /// Pull a resolved image into the store: the top-level manifest or index (as a blob named
    /// by its digest), the manifest of every platform in `platforms` (`os/arch` matches every
    /// variant, `os/arch/variant` only that one; empty means every manifest the index
    /// names), and each manifest's config and layers. Blobs already in the store are not
    /// fetched again. `progress` hears what is being fetched, bytes so far and the total.
    ///
    /// Only `resolved.reference` and `resolved.digest` are trusted: which manifests there
    /// are is read again from the index (whose bytes the digest checks), so a
    /// `ResolvedImage` rebuilt from `kiln.lock` pulls the same blobs as a fresh one. Every
    /// platform asked for must exist; for a single manifest, its config (pulled first)
    /// says which platform it is.
    pub fn pull(
        &self,
        store: &Store,
        resolved: &ResolvedImage,
        platforms: &[String],
        progress: &mut dyn FnMut(&str, u64, Option<u64>),
    ) -> Result<PulledImage, OciError> {
        let image = &resolved.reference;
        let mut blobs = BTreeSet::new();
        let top = self.manifest_into_store(
            store,
            image,
            &resolved.digest,
            &resolved.media_type,
            "manifest",
            progress,
        )?;
        blobs.insert(resolved.digest.clone());
        let top_is_index = is_index(&top.media_type);
        let mut image_manifests = Vec::new();
        if top_is_index {
            let url = self.manifest_url(image, &resolved.digest.to_string());
            let entries = index_entries(image, &url, &top)?;
            for entry in select_platforms(image, &entries, platforms)? {
                let manifest = self.manifest_into_store(
                    store,
                    image,
                    &entry.digest,
                    &entry.media_type,
                    "platform manifest",
                    progress,
                )?;
                blobs.insert(entry.digest.clone());
                image_manifests.push(manifest);
            }
        } else {
            image_manifests.push(top);
        }
        for manifest in &image_manifests {
            let url = self.manifest_url(image, &manifest.digest.to_string());
            let config = manifest.document.config.as_ref().ok_or_else(|| {
                invalid(
                    image,
                    &url,
                    "an image manifest without a `config`".to_owned(),
                )
            })?;
            let config_digest = descriptor_digest(image, &url, config)?;
            self.blob_into_store(
                store,
                image,
                &config_digest,
                config.size,
                "config",
                progress,
            )?;
            blobs.insert(config_digest.clone());
            if !top_is_index && !platforms.is_empty() {
                let path = store.blob_path(&config_digest);
                let bytes = fs_err::read(&path).map_err(|error| OciError::Store {
                    image: image.to_string(),
                    digest: config_digest.clone(),
                    url: self.blob_url(image, &config_digest),
                    source: StoreError::Io { path, error },
                })?;
                let single = [PlatformManifest {
                    platform: config_platform(image, &url, &bytes)?,
                    digest: manifest.digest.clone(),
                    media_type: manifest.media_type.clone(),
                    size: manifest.bytes.len() as u64,
                }];
                select_platforms(image, &single, platforms)?;
            }
            for layer in manifest.document.layers.as_deref().unwrap_or_default() {
                let digest = descriptor_digest(image, &url, layer)?;
                if blobs.insert(digest.clone()) {
                    self.blob_into_store(store, image, &digest, layer.size, "layer", progress)?;
                }
            }
        }
        Ok(PulledImage {
            blobs: blobs.into_iter().collect(),
        })
    }

    /// `<base>/v2/<repository>/manifests/<reference>`.
    fn manifest_url(&self, image: &ImageReference, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.endpoints.base_url(&image.registry),
            image.repository
        )
    }

    /// `<base>/v2/<repository>/blobs/<digest>`.
    fn blob_url(&self, image: &ImageReference, digest: &Digest) -> String {
        format!(
            "{}/v2/{}/blobs/{digest}",
            self.endpoints.base_url(&image.registry),
            image.repository
        )
    }

    /// GET a manifest by tag or digest, check its digest, parse it.
    fn fetch_manifest(
        &self,
        image: &ImageReference,
        reference: &str,
        expected: Option<&Digest>,
        media_type_hint: Option<&str>,
    ) -> Result<Manifest, OciError> {
        let url = self.manifest_url(image, reference);
        let accept = [(
            "Accept".to_owned(),
            [
                OCI_INDEX,
                DOCKER_MANIFEST_LIST,
                OCI_MANIFEST,
                DOCKER_MANIFEST,
            ]
            .join(", "),
        )];
        let wanted = Wanted::Manifest(reference);
        let response = self.with_token(image, &url, wanted, |authorization| {
            let headers: Vec<(String, String)> =
                accept.iter().cloned().chain(authorization).collect();
            self.http.get_small(&url, &headers, MANIFEST_LIMIT)
        })?;
        let digest = Digest::of_bytes(&response.body);
        // A header that is not a sha256 digest (another algorithm) says nothing kiln can
        // check; the bytes' own hash is what gets pinned either way.
        if let Some(claimed) = response
            .docker_content_digest()
            .and_then(|header| header.trim().parse::<Digest>().ok())
        {
            if claimed != digest {
                return Err(OciError::DigestMismatch {
                    image: image.to_string(),
                    url,
                    expected: claimed,
                    actual: digest,
                    claimed_by: "the Docker-Content-Digest header".to_owned(),
                });
            }
        }
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(OciError::DigestMismatch {
                    image: image.to_string(),
                    url,
                    expected: expected.clone(),
                    actual: digest,
                    claimed_by: "the reference".to_owned(),
                });
            }
        }
        let content_type = response.content_type().map(str::to_owned);
        parse_manifest(
            image,
            &url,
            response.body,
            digest,
            content_type.as_deref().or(media_type_hint),
        )
    }

    /// A single manifest's config, fetched and checked against its digest.
    fn config_bytes(
        &self,
        image: &ImageReference,
        manifest_url: &str,
        manifest: &Manifest,
    ) -> Result<Vec<u8>, OciError> {
        let config = manifest.document.config.as_ref().ok_or_else(|| {
            invalid(
                image,
                manifest_url,
                "an image manifest without a `config`".to_owned(),
            )
        })?;
        let digest = descriptor_digest(image, manifest_url, config)?;
        if config.size > CONFIG_LIMIT {
            return Err(invalid(
                image,
                manifest_url,
                format!(
                    "its config {digest} is {} bytes, more than kiln reads ({CONFIG_LIMIT})",
                    config.size
                ),
            ));
        }
        let url = self.blob_url(image, &digest);
        let wanted = Wanted::Blob {
            kind: "config",
            digest: &digest,
        };
        let response = self.with_token(image, &url, wanted, |authorization| {
            self.http.get_small(&url, &authorization, CONFIG_LIMIT)
        })?;
        let actual = Digest::of_bytes(&response.body);
        if actual != digest {
            return Err(OciError::DigestMismatch {
                image: image.to_string(),
                url,
                expected: digest,
                actual,
                claimed_by: "the manifest".to_owned(),
            });
        }
        Ok(response.body)
    }

    /// Put a manifest in the store (unless it is there) and return it parsed.
    fn manifest_into_store(
        &self,
        store: &Store,
        image: &ImageReference,
        digest: &Digest,
        media_type: &str,
        kind: &str,
        progress: &mut dyn FnMut(&str, u64, Option<u64>),
    ) -> Result<Manifest, OciError> {
        let url = self.manifest_url(image, &digest.to_string());
        let store_error = |source: StoreError| OciError::Store {
            image: image.to_string(),
            digest: digest.clone(),
            url: url.clone(),
            source,
        };
        if store.has_blob(digest) {
            // The store verified these bytes when they came in.
            let path = store.blob_path(digest);
            let bytes =
                fs_err::read(&path).map_err(|error| store_error(StoreError::Io { path, error }))?;
            return parse_manifest(image, &url, bytes, digest.clone(), Some(media_type));
        }
        let manifest =
            self.fetch_manifest(image, &digest.to_string(), Some(digest), Some(media_type))?;
        let size = manifest.bytes.len() as u64;
        store
            .write_blob(digest, Some(size), &manifest.bytes[..])
            .map_err(store_error)?;
        progress(&format!("{image} {kind} {digest}"), size, Some(size));
        Ok(manifest)
    }

    /// Put a config or layer in the store (unless it is there), resumably and verified.
    fn blob_into_store(
        &self,
        store: &Store,
        image: &ImageReference,
        digest: &Digest,
        size: u64,
        kind: &str,
        progress: &mut dyn FnMut(&str, u64, Option<u64>),
    ) -> Result<(), OciError> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let url = self.blob_url(image, digest);
        let what = format!("{image} {kind} {digest}");
        self.with_token(
            image,
            &url,
            Wanted::Blob { kind, digest },
            |authorization| {
                self.http.fetch_blob(
                    store,
                    &url,
                    digest,
                    Some(size),
                    &authorization,
                    &mut |done, total| progress(&what, done, total),
                )
            },
        )?;
        Ok(())
    }

    /// Run `request` with the cached token for this registry and repository, if any; on a
    /// 401 with a bearer challenge, get a fresh anonymous token and run it once more.
    fn with_token<T>(
        &self,
        image: &ImageReference,
        url: &str,
        wanted: Wanted<'_>,
        mut request: impl FnMut(Vec<(String, String)>) -> Result<T, FetchError>,
    ) -> Result<T, OciError> {
        let key = (
            self.endpoints.base_url(&image.registry),
            image.repository.clone(),
        );
        let cached = self.tokens.lock().expect("token cache").get(&key).cloned();
        let challenge = match request(authorization(cached.as_deref())) {
            Err(FetchError::Unauthorized {
                www_authenticate, ..
            }) => www_authenticate,
            other => return other.map_err(|error| fetch_error(image, url, wanted, error)),
        };
        let token = self.request_token(image, url, challenge.as_deref())?;
        self.tokens
            .lock()
            .expect("token cache")
            .insert(key, token.clone());
        match request(authorization(Some(&token))) {
            Err(FetchError::Unauthorized { .. }) => Err(OciError::AccessDenied {
                image: image.to_string(),
                url: url.to_owned(),
            }),
            other => other.map_err(|error| fetch_error(image, url, wanted, error)),
        }
    }

    /// The anonymous bearer-token handshake: GET `realm?service=…&scope=repository:<repo>:pull`.
    fn request_token(
        &self,
        image: &ImageReference,
        url: &str,
        challenge: Option<&str>,
    ) -> Result<String, OciError> {
        let header = challenge.unwrap_or_default();
        let challenges = parse_challenges(header);
        let Some(bearer) = challenges
            .iter()
            .find(|challenge| challenge.scheme == "bearer")
        else {
            return Err(OciError::CredentialsRequired {
                image: image.to_string(),
                url: url.to_owned(),
                challenge: if header.is_empty() {
                    "a 401 without a WWW-Authenticate challenge".to_owned()
                } else {
                    header.to_owned()
                },
            });
        };
        let token_error = |realm: &str, reason: String| OciError::Token {
            image: image.to_string(),
            url: url.to_owned(),
            realm: realm.to_owned(),
            reason,
        };
        let Some(realm) = bearer.param("realm") else {
            return Err(token_error(
                "(none)",
                format!("the challenge `{header}` names no realm (token service)"),
            ));
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(token_error(
                realm,
                "the realm is not an http(s) URL".to_owned(),
            ));
        }
        let scope = format!("repository:{}:pull", image.repository);
        let token_url = token_url(realm, bearer.param("service"), &scope);
        let response = match self.http.get_small(&token_url, &[], TOKEN_LIMIT) {
            Ok(response) => response,
            Err(FetchError::Unauthorized { .. }) => {
                return Err(OciError::CredentialsRequired {
                    image: image.to_string(),
                    url: token_url,
                    challenge: "the token service refuses anonymous pull tokens".to_owned(),
                })
            }
            Err(error) => return Err(token_error(realm, error.to_string())),
        };
        let answer: TokenResponse = serde_json::from_slice(&response.body)
            .map_err(|error| token_error(realm, format!("the answer is not a token: {error}")))?;
        answer
            .token
            .filter(|token| !token.is_empty())
            .or(answer.access_token.filter(|token| !token.is_empty()))
            .ok_or_else(|| {
                token_error(
                    realm,
                    "the answer has neither `token` nor `access_token`".to_owned(),
                )
            })
    }
}

/// The `Authorization` header for a bearer token, if there is one.
fn authorization(token: Option<&str>) -> Vec<(String, String)> {
    token
        .map(|token| vec![("Authorization".to_owned(), format!("Bearer {token}"))])
        .unwrap_or_default()
}

/// What a request asks the registry for, to say what is missing when it answers 404.
#[derive(Clone, Copy)]
enum Wanted<'w> {
    /// A manifest, by tag or digest.
    Manifest(&'w str),
    /// A config or layer named by a manifest.
    Blob { kind: &'w str, digest: &'w Digest },
}

/// Turn a transfer error into this module's error, with the image and what was asked for.
fn fetch_error(
    image: &ImageReference,
    url: &str,
    wanted: Wanted<'_>,
    error: FetchError,
) -> OciError {
    match (error, wanted) {
        (FetchError::ClientError { status: 404, .. }, Wanted::Manifest(reference)) => {
            OciError::NotFound {
                image: image.to_string(),
                name: image.name(),
                url: url.to_owned(),
                what: if reference.starts_with("sha256:") {
                    format!("manifest {reference}")
                } else {
                    format!("manifest for tag `{reference}`")
                },
            }
        }
        (FetchError::ClientError { status: 404, .. }, Wanted::Blob { kind, digest }) => {
            OciError::BlobMissing {
                image: image.to_string(),
                url: url.to_owned(),
                kind: kind.to_owned(),
                digest: digest.clone(),
            }
        }
        (FetchError::Unauthorized { .. } | FetchError::ClientError { status: 403, .. }, _) => {
            OciError::AccessDenied {
                image: image.to_string(),
                url: url.to_owned(),
            }
        }
        (source, _) => OciError::Fetch {
            image: image.to_string(),
            url: url.to_owned(),
            source,
        },
    }
}

fn invalid(image: &ImageReference, url: &str, reason: String) -> OciError {
    OciError::InvalidManifest {
        image: image.to_string(),
        url: url.to_owned(),
        reason,
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Parse manifest bytes and settle their media type: the document's own `mediaType` field,
/// else the `Content-Type` the registry sent (or the media type recorded for it), else the
/// shape (OCI lets an index or manifest omit `mediaType`).
fn parse_manifest(
    image: &ImageReference,
    url: &str,
    bytes: Vec<u8>,
    digest: Digest,
    content_type: Option<&str>,
) -> Result<Manifest, OciError> {
    let document: ManifestDocument = serde_json::from_slice(&bytes)
        .map_err(|error| invalid(image, url, format!("not a manifest or index: {error}")))?;
    if document.schema_version == Some(1) {
        return Err(OciError::UnsupportedMediaType {
            image: image.to_string(),
            url: url.to_owned(),
            media_type: "application/vnd.docker.distribution.manifest.v1+json".to_owned(),
            hint: "; Docker schema 1 is deprecated: push the image again with a current tool \
                   (e.g. `skopeo copy --format v2s2`)"
                .to_owned(),
        });
    }
    let content_type = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| is_index(value) || is_manifest(value));
    let shape = if document.manifests.is_some() {
        Some(OCI_INDEX)
    } else if document.config.is_some() && document.layers.is_some() {
        Some(OCI_MANIFEST)
    } else {
        None
    };
    let media_type = match (document.media_type.as_deref(), content_type, shape) {
        (Some(declared), _, _) => declared,
        (None, Some(header), _) => header,
        (None, None, Some(shape)) => shape,
        (None, None, None) => {
            return Err(invalid(
                image,
                url,
                "it has no `mediaType` and neither `manifests` nor `config` and `layers`"
                    .to_owned(),
            ))
        }
    }
    .to_owned();
    if is_index(&media_type) && document.manifests.is_none() {
        return Err(invalid(
            image,
            url,
            format!("a `{media_type}` without `manifests`"),
        ));
    }
    if is_manifest(&media_type) && document.config.is_none() {
        return Err(invalid(
            image,
            url,
            format!("a `{media_type}` without `config`"),
        ));
    }
    if !is_index(&media_type) && !is_manifest(&media_type) {
        return Err(OciError::UnsupportedMediaType {
            image: image.to_string(),
            url: url.to_owned(),
            media_type,
            hint: String::new(),
        });
    }
    Ok(Manifest {
        bytes,
        digest,
        media_type,
        document,
    })
}

/// The manifests an index names, with their platforms. Each must be an image manifest: an
/// index inside an index is refused. An entry without a media type (OCI requires one) is
/// taken to be of the index's family.
fn index_entries(
    image: &ImageReference,
    url: &str,
    index: &Manifest,
) -> Result<Vec<PlatformManifest>, OciError> {
    let entries = index.document.manifests.as_deref().unwrap_or_default();
    let mut platforms = Vec::with_capacity(entries.len());
    for entry in entries {
        let digest = descriptor_digest(image, url, entry)?;
        let media_type = match entry.media_type.as_deref() {
            Some(media_type) => media_type,
            None if index.media_type == DOCKER_MANIFEST_LIST => DOCKER_MANIFEST,
            None => OCI_MANIFEST,
        };
        if !is_manifest(media_type) {
            let nested = if is_index(media_type) {
                " (an index inside an index is not supported yet)"
            } else {
                ""
            };
            return Err(OciError::UnsupportedMediaType {
                image: image.to_string(),
                url: url.to_owned(),
                media_type: media_type.to_owned(),
                hint: format!("; it is the media type of the index's entry {digest}{nested}"),
            });
        }
        platforms.push(PlatformManifest {
            platform: entry
                .platform
                .as_ref()
                .map_or_else(|| Platform::default().name(), Platform::name),
            digest,
            media_type: media_type.to_owned(),
            size: entry.size,
        });
    }
    Ok(platforms)
}

/// The platform an image config declares (`os`, `architecture`, `variant`).
fn config_platform(image: &ImageReference, url: &str, config: &[u8]) -> Result<String, OciError> {
    let platform: Platform = serde_json::from_slice(config).map_err(|error| {
        invalid(
            image,
            url,
            format!("its config is not an image config: {error}"),
        )
    })?;
    Ok(platform.name())
}

/// A descriptor's digest, parsed.
fn descriptor_digest(
    image: &ImageReference,
    url: &str,
    descriptor: &Descriptor,
) -> Result<Digest, OciError> {
    descriptor.digest.parse().map_err(|error| {
        invalid(
            image,
            url,
            format!("a descriptor's digest is unusable: {error}"),
        )
    })
}

/// The entries `platforms` asks for (all when empty). A platform `os/arch` matches every
/// variant of it; `os/arch/variant` only that variant. Each platform asked for must match
/// at least one entry.
fn select_platforms<'e>(
    image: &ImageReference,
    entries: &'e [PlatformManifest],
    platforms: &[String],
) -> Result<Vec<&'e PlatformManifest>, OciError> {
    for wanted in platforms {
        if !entries
            .iter()
            .any(|entry| platform_matches(wanted, &entry.platform))
        {
            let available: Vec<&str> = entries
                .iter()
                .map(|entry| entry.platform.as_str())
                .collect();
            return Err(OciError::PlatformNotFound {
                image: image.to_string(),
                platform: wanted.clone(),
                available: if available.is_empty() {
                    "no platform manifests".to_owned()
                } else {
                    available.join(", ")
                },
            });
        }
    }
    Ok(entries
        .iter()
        .filter(|entry| {
            platforms.is_empty()
                || platforms
                    .iter()
                    .any(|wanted| platform_matches(wanted, &entry.platform))
        })
        .collect())
}

/// Whether a platform asked for (`os/arch` or `os/arch/variant`) selects a manifest's
/// platform: `os/arch` matches every variant, `os/arch/variant` only itself.
pub fn platform_matches(wanted: &str, platform: &str) -> bool {
    if wanted == platform {
        return true;
    }
    let wanted_parts = wanted.split('/').count();
    wanted_parts == 2
        && platform.split('/').count() == 3
        && platform.starts_with(&format!("{wanted}/"))
}

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    /// The scheme, lower case (`bearer`, `basic`).
    scheme: String,
    /// Parameters, names lower case, values unquoted.
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parse a `WWW-Authenticate` header into its challenges, e.g.
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`. Lenient:
/// what it cannot read it skips, and the caller reports a missing realm.
fn parse_challenges(header: &str) -> Vec<Challenge> {
    let is_token = |character: char| {
        character.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(character)
    };
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest
            .trim_start_matches(|character: char| character == ',' || character.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let token_end = rest
            .find(|character: char| !is_token(character))
            .unwrap_or(rest.len());
        if token_end == 0 {
            // Not a token (e.g. the padding of a token68): skip the character.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        match (after.strip_prefix('='), challenges.last_mut()) {
            (Some(value_start), Some(challenge)) => {
                let value_start = value_start.trim_start();
                let (value, remainder) = if let Some(quoted) = value_start.strip_prefix('"') {
                    let mut value = String::new();
                    let mut characters = quoted.char_indices();
                    let mut end = quoted.len();
                    while let Some((index, character)) = characters.next() {
                        match character {
                            '\\' => {
                                if let Some((_, escaped)) = characters.next() {
                                    value.push(escaped);
                                }
                            }
                            '"' => {
                                end = index + 1;
                                break;
                            }
                            _ => value.push(character),
                        }
                    }
                    (value, &quoted[end..])
                } else {
                    let end = value_start
                        .find(|character: char| {
                            !is_token(character) && character != '/' && character != ':'
                        })
                        .unwrap_or(value_start.len());
                    (value_start[..end].to_owned(), &value_start[end..])
                };
                challenge.params.push((token.to_ascii_lowercase(), value));
                rest = remainder;
            }
            _ => {
                challenges.push(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: Vec::new(),
                });
                rest = after;
            }
        }
    }
    challenges
}

/// The token request URL: `realm` with `service` and `scope` added to its query.
fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_owned();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(separator);
        url.push_str("service=");
        url.push_str(&percent_encode(service));
        separator = '&';
    }
    url.push(separator);
    url.push_str("scope=");
    url.push_str(&percent_encode(scope));
    url
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(input: &str) -> ImageReference {
        input
            .parse()
            .unwrap_or_else(|error| panic!("{input}: {error}"))
    }

    fn parse_error(input: &str) -> String {
        match input.parse::<ImageReference>() {
            Ok(reference) => panic!("{input} parsed as {reference:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn docker_hub_short_names_are_spelled_out() {
        let busybox = parse("busybox");
        assert_eq!(busybox.registry, "docker.io");
        assert_eq!(busybox.repository, "library/busybox");
        assert_eq!(busybox.tag, None);
        assert_eq!(busybox.digest, None);
        assert_eq!(busybox.to_string(), "docker.io/library/busybox");
        assert_eq!(busybox.manifest_reference(), "latest");
        assert_eq!(
            parse("busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            parse("docker.io/busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            parse("index.docker.io/library/busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            parse("jupyterhub/k8s-hub:4.3.2").to_string(),
            "docker.io/jupyterhub/k8s-hub:4.3.2"
        );
    }

    #[test]
    fn other_registries_keep_their_names() {
        let hub = parse("quay.io/jupyterhub/k8s-hub:4.3.2");
        assert_eq!(
            (
                hub.registry.as_str(),
                hub.repository.as_str(),
                hub.tag.as_deref()
            ),
            ("quay.io", "jupyterhub/k8s-hub", Some("4.3.2"))
        );
        let pause = parse("registry.k8s.io/pause:3.10");
        assert_eq!(
            (pause.registry.as_str(), pause.repository.as_str()),
            ("registry.k8s.io", "pause")
        );
        assert_eq!(parse("localhost/app").registry, "localhost");
        assert_eq!(parse("localhost:5000/app").registry, "localhost:5000");
        assert_eq!(parse("[::1]:5000/app:1").registry, "[::1]:5000");
        assert_eq!(
            parse("nvcr.io/nvidia/gpu-operator:v24.9.2").repository,
            "nvidia/gpu-operator"
        );
    }

    #[test]
    fn a_port_is_not_a_tag_and_a_digest_wins_over_the_tag() {
        let input = format!("127.0.0.1:5000/demo/app:1@sha256:{HEX}");
        let reference = parse(&input);
        assert_eq!(reference.registry, "127.0.0.1:5000");
        assert_eq!(reference.repository, "demo/app");
        assert_eq!(reference.tag.as_deref(), Some("1"));
        assert_eq!(reference.digest.as_ref().map(Digest::hex), Some(HEX));
        assert_eq!(reference.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(reference.to_string(), input);
        assert_eq!(parse(&reference.to_string()), reference);
        let untagged = parse("127.0.0.1:5000/demo/app");
        assert_eq!(
            (untagged.repository.as_str(), untagged.tag),
            ("demo/app", None)
        );
        assert_eq!(parse(&format!("busybox@sha256:{HEX}")).tag, None);
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        assert!(parse_error("").contains("it is empty"));
        assert!(parse_error("busybox 1.36").contains("white space"));
        assert!(parse_error("busybox:").contains("tag after `:` is empty"));
        assert!(parse_error("busybox:-rc").contains("must start with a letter"));
        assert!(parse_error("busybox:1+2").contains("contains `+`"));
        let upper = parse_error("quay.io/JupyterHub/hub:1");
        assert!(upper.contains("lower case: `jupyterhub/hub`"), "{upper}");
        assert!(parse_error("quay.io/a//b:1").contains("empty path component"));
        assert!(parse_error("quay.io/").contains("repository name is empty"));
        assert!(parse_error("quay.io/a-:1").contains("must start and end"));
        assert!(parse_error("quay.io/a...b:1").contains("must start and end"));
        assert!(parse_error("busybox@sha256:abc").contains("the part after `@` is not a digest"));
        assert!(parse_error("example.com:http/app").contains("where a port number belongs"));
        assert!(parse_error("exa_mple.com/app").contains("is not a host name"));
        let error = parse_error("Busybox");
        assert!(
            error.starts_with("`Busybox` is not an image reference"),
            "{error}"
        );
        assert!(error.contains("docker.io/library/busybox:1.36"), "{error}");
        assert!(parse_error(&format!("quay.io/{}", "a".repeat(250))).contains("at most 255"));
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        for valid in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            parse(&format!("quay.io/{valid}"));
        }
        for invalid in ["a___b", "a._b", ".a", "a_"] {
            parse_error(&format!("quay.io/{invalid}"));
        }
    }

    #[test]
    fn endpoints_default_to_https_and_mirrors_replace_them() {
        let endpoints = Endpoints::new().with_mirror("example.invalid", "http://127.0.0.1:5000/");
        assert_eq!(
            endpoints.base_url("docker.io"),
            "https://registry-1.docker.io"
        );
        assert_eq!(endpoints.base_url("quay.io"), "https://quay.io");
        assert_eq!(
            endpoints.base_url("example.invalid"),
            "http://127.0.0.1:5000"
        );
    }

    #[test]
    fn docker_hub_challenge_is_parsed() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let challenges = parse_challenges(header);
        assert_eq!(
            challenges,
            vec![Challenge {
                scheme: "bearer".to_owned(),
                params: vec![
                    (
                        "realm".to_owned(),
                        "https://auth.docker.io/token".to_owned()
                    ),
                    ("service".to_owned(), "registry.docker.io".to_owned()),
                    (
                        "scope".to_owned(),
                        "repository:library/busybox:pull".to_owned()
                    ),
                ],
            }]
        );
    }

    #[test]
    fn challenges_with_escapes_commas_and_several_schemes_are_parsed() {
        let header = r#"BASIC realm="my \"registry\", v2", Bearer Realm = "https://token.example/t?x=1" , service=reg.example"#;
        let challenges = parse_challenges(header);
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].param("realm"), Some(r#"my "registry", v2"#));
        assert_eq!(challenges[1].scheme, "bearer");
        assert_eq!(
            challenges[1].param("realm"),
            Some("https://token.example/t?x=1")
        );
        assert_eq!(challenges[1].param("service"), Some("reg.example"));
        assert_eq!(
            parse_challenges(r#"Basic realm="basic-realm""#)[0].scheme,
            "basic"
        );
        assert_eq!(parse_challenges("Bearer")[0].param("realm"), None);
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn token_url_adds_service_and_an_encoded_scope() {
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                "repository:library/busybox:pull"
            ),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull"
        );
        assert_eq!(
            token_url("https://quay.io/v2/auth?a=b", None, "repository:x/y:pull"),
            "https://quay.io/v2/auth?a=b&scope=repository%3Ax%2Fy%3Apull"
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn media_type_comes_from_the_document_then_the_header_then_the_shape() {
        let image = parse("quay.io/a/b:1");
        let digest = Digest::of_bytes(b"");
        let media_type = |body: &str, header: Option<&str>| {
            parse_manifest(
                &image,
                "u",
                body.as_bytes().to_vec(),
                digest.clone(),
                header,
            )
            .map(|manifest| manifest.media_type)
            .map_err(|error| error.to_string())
        };
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let manifest = r#"{"schemaVersion":2,"config":{"digest":"x","size":1},"layers":[]}"#;
        assert_eq!(media_type(index, None).unwrap(), OCI_INDEX);
        assert_eq!(
            media_type(
                index,
                Some(&format!("{DOCKER_MANIFEST_LIST}; charset=utf-8"))
            )
            .unwrap(),
            DOCKER_MANIFEST_LIST
        );
        assert_eq!(
            media_type(manifest, Some("application/json")).unwrap(),
            OCI_MANIFEST
        );
        let declared = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"x","size":1}},"layers":[]}}"#
        );
        assert_eq!(
            media_type(&declared, Some(OCI_MANIFEST)).unwrap(),
            DOCKER_MANIFEST
        );
        let schema1 = media_type(r#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
        assert!(schema1.contains("schema 1 is deprecated"), "{schema1}");
        let artifact = media_type(
            r#"{"mediaType":"application/vnd.cncf.helm.config.v1+json"}"#,
            None,
        )
        .unwrap_err();
        assert!(
            artifact
                .contains("media type `application/vnd.cncf.helm.config.v1+json` is not supported"),
            "{artifact}"
        );
        assert!(media_type("not json", None)
            .unwrap_err()
            .contains("not a manifest or index"));
    }

    #[test]
    fn platforms_without_a_variant_match_every_variant() {
        assert!(platform_matches("linux/amd64", "linux/amd64"));
        assert!(platform_matches("linux/arm64", "linux/arm64/v8"));
        assert!(platform_matches("linux/arm/v7", "linux/arm/v7"));
        assert!(!platform_matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!platform_matches("linux/arm", "linux/arm64"));
        assert!(!platform_matches("linux/amd64", "linux/arm64"));
    }

    #[test]
    fn a_missing_platform_names_the_ones_there_are() {
        let digest = Digest::of_bytes(b"");
        let image = parse("quay.io/a/b:1");
        let entries: Vec<PlatformManifest> = ["linux/amd64", "linux/arm64/v8"]
            .iter()
            .map(|platform| PlatformManifest {
                platform: (*platform).to_owned(),
                digest: digest.clone(),
                media_type: OCI_MANIFEST.to_owned(),
                size: 1,
            })
            .collect();
        let selected = select_platforms(&image, &entries, &["linux/arm64".to_owned()]).unwrap();
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].platform, "linux/arm64/v8");
        assert_eq!(select_platforms(&image, &entries, &[]).unwrap().len(), 2);
        let error = select_platforms(&image, &entries, &["linux/s390x".to_owned()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "image quay.io/a/b:1 has no manifest for platform linux/s390x; it has linux/amd64, \
             linux/arm64/v8: pull one of those, or pick an image built for linux/s390x"
        );
    }

    #[test]
    fn index_entries_need_image_manifests_and_default_what_is_missing() {
        let image = parse("quay.io/a/b:1");
        let url = "http://mirror/v2/a/b/manifests/1";
        let entries = |index: &str| {
            let index = parse_manifest(
                &image,
                url,
                index.as_bytes().to_vec(),
                Digest::of_bytes(b""),
                None,
            )
            .expect("an index");
            index_entries(&image, url, &index)
        };
        let digest = format!("sha256:{HEX}");
        let listed = entries(&format!(
            r#"{{"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"digest":"{digest}","size":7}},
               {{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":8,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#
        ))
        .expect("entries");
        assert_eq!(
            listed,
            vec![
                PlatformManifest {
                    platform: "unknown/unknown".to_owned(),
                    digest: Digest::from_str(&digest).unwrap(),
                    media_type: DOCKER_MANIFEST.to_owned(),
                    size: 7,
                },
                PlatformManifest {
                    platform: "linux/arm/v7".to_owned(),
                    digest: Digest::from_str(&digest).unwrap(),
                    media_type: OCI_MANIFEST.to_owned(),
                    size: 8,
                },
            ]
        );
        let nested = entries(&format!(
            r#"{{"manifests":[{{"mediaType":"{OCI_INDEX}","digest":"{digest}","size":7}}]}}"#
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            nested,
            format!(
                "image quay.io/a/b:1: {url}: media type `{OCI_INDEX}` is not supported; kiln \
                 reads OCI image indexes and manifests, and Docker manifest lists and v2 schema \
                 2 manifests; it is the media type of the index's entry {digest} (an index \
                 inside an index is not supported yet)"
            )
        );
        let bad_digest = entries(r#"{"manifests":[{"digest":"md5:abc","size":7}]}"#).unwrap_err();
        assert!(
            bad_digest
                .to_string()
                .contains("a descriptor's digest is unusable"),
            "{bad_digest}"
        );
    }
}
