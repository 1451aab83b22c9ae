//! Air gap: addons that download at enable time, and images no pin set covers.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::rules::dashboard::manifests;
use crate::lint::{Context, Finding, Rule};

/// The rules of this module.
pub const RULES: &[Rule] = &[ADDON_DOWNLOADS, IMAGE_NOT_PINNED];

/// An addon that needs the internet when it is enabled.
pub const ADDON_DOWNLOADS: Rule = Rule {
    id: "airgap-addon-downloads",
    severity: Severity::Error,
    title: "A MicroK8s addon that downloads its chart at enable time, on an air-gapped cluster",
    check: check_addons,
};

/// An image no pin set covers.
pub const IMAGE_NOT_PINNED: Rule = Rule {
    id: "image-not-pinned",
    severity: Severity::Error,
    title: "An image the cluster runs is not pinned by any of its image sets",
    check: check_images,
};

/// For an addon that downloads at enable time: what it fetches, and the charts that replace
/// it (the first one is suggested).
fn downloads(
    addon: &str,
    track: Option<(u32, u32)>,
) -> Option<(&'static str, &'static [&'static str])> {
    let name = addon
        .strip_prefix("community/")
        .or_else(|| addon.strip_prefix("core/"))
        .unwrap_or(addon);
    match name {
        // `gpu-addon-airgapped` reports these, with the gpu-operator hint: one finding each.
        "nvidia" | "gpu" => None,
        "dashboard" => Some((
            "the kubernetes-dashboard chart from kubernetes-retired.github.io",
            &["kubernetes-dashboard"],
        )),
        "observability" => Some((
            "the kube-prometheus-stack, loki and tempo charts",
            &["kube-prometheus-stack"],
        )),
        "nfs" => Some((
            "the nfs-server-provisioner chart",
            &[
                "nfs-subdir-external-provisioner",
                "csi-driver-nfs",
                "nfs-server-provisioner",
            ],
        )),
        "ingress" if track.is_some_and(|track| track >= (1, 35)) => Some((
            "the Traefik chart and the Gateway API CRDs from github.com",
            &["traefik"],
        )),
        _ => None,
    }
}

fn check_addons(context: &Context<'_>) -> Vec<Finding> {
    if !context.cluster.settings.cluster.airgapped {
        return Vec::new();
    }
    let Some(microk8s) = &context.cluster.settings.microk8s else {
        return Vec::new();
    };
    let track = microk8s.track();
    let mut findings = Vec::new();
    for (addon, settings) in &microk8s.addons {
        if !settings.enabled {
            continue;
        }
        let Some((fetches, charts)) = downloads(addon, track) else {
            continue;
        };
        let replacement = charts.iter().find_map(|chart| {
            context
                .releases_of_chart(chart)
                .first()
                .map(|release| (release.to_string(), *chart))
        });
        let (message, hint) = match replacement {
            Some((release, chart)) => (
                format!(
                    "the `{addon}` addon downloads {fetches} when it is enabled, and the \
                     cluster is air-gapped: enabling it fails (release `{release}` already \
                     installs the bundled {chart} chart)"
                ),
                format!(
                    "remove [microk8s.addons.{addon}]: release `{release}` installs the same \
                     thing from the chart kiln bundles"
                ),
            ),
            None => (
                format!(
                    "the `{addon}` addon downloads {fetches} when it is enabled, and the \
                     cluster is air-gapped: enabling it fails, and no Helm release replaces it"
                ),
                format!(
                    "remove [microk8s.addons.{addon}] and add a release of chart `{}` under \
                     [helm.releases] (kiln pins and bundles its chart and images)",
                    charts[0]
                ),
            ),
        };
        findings.push(Finding::new(
            &ADDON_DOWNLOADS,
            &context.at(&["microk8s", "addons", addon]),
            message,
            hint,
        ));
    }
    findings
}

/// An image reference, normalized: `registry/path`, tag (`None`: unknown, any tag) and
/// digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// `docker.io/library/busybox`.
    pub repository: String,
    /// `1.28.4`.
    pub tag: Option<String>,
    /// `sha256:...`.
    pub digest: Option<String>,
}

/// Normalize an image reference the way containerd reads it (`busybox` is
/// `docker.io/library/busybox:latest`). `default_latest`: a reference without tag or digest
/// means `latest` (false when the tag comes from elsewhere, e.g. a chart default).
pub(crate) fn normalize(reference: &str, default_latest: bool) -> Option<ImageRef> {
    let reference = reference.trim();
    if reference.is_empty()
        || reference.contains(char::is_whitespace)
        || reference.contains("{{")
        || reference.contains("${")
    {
        return None;
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest.to_string())),
        None => (reference, None),
    };
    let last_slash = name.rfind('/').map(|index| index + 1).unwrap_or(0);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(colon) => (
            &name[..last_slash + colon],
            Some(name[last_slash + colon + 1..].to_string()),
        ),
        None => (name, None),
    };
    if path.is_empty() {
        return None;
    }
    let (registry, rest) = match path.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_ascii_lowercase(), rest.to_string())
        }
        _ => ("docker.io".to_string(), path.to_string()),
    };
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => registry,
    };
    let rest = if registry == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    let tag = match (tag, &digest) {
        (None, None) if default_latest => Some("latest".to_string()),
        (tag, _) => tag,
    };
    Some(ImageRef {
        repository: format!("{registry}/{rest}"),
        tag,
        digest,
    })
}

/// A scalar as text (tags are often written as numbers).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// An image written as a map: `{name|repository, tag, registry, digest|sha}` (z2jh and most
/// charts) or `{repository, image, version}` (NVIDIA's charts). Returns the reference and the
/// key whose origin to show.
fn image_map(
    map: &serde_json::Map<String, Value>,
) -> Option<(String, Option<String>, &'static str)> {
    let field = |key: &str| map.get(key).and_then(text);
    if let (Some(repository), Some(image)) = (field("repository"), field("image")) {
        let version = field("version").or_else(|| field("tag"));
        let reference = match &version {
            Some(version) => format!("{repository}/{image}:{version}"),
            None => format!("{repository}/{image}"),
        };
        return Some((reference, version, "image"));
    }
    let (name, key) = match (field("name"), field("repository")) {
        (Some(name), _) => (name, "name"),
        (None, Some(repository)) => (repository, "repository"),
        _ => return None,
    };
    let name = match field("registry") {
        Some(registry) if !name.starts_with(&format!("{registry}/")) => {
            format!("{}/{name}", registry.trim_end_matches('/'))
        }
        _ => name,
    };
    let tag = field("tag");
    let digest = field("digest").or_else(|| {
        field("sha").map(|sha| {
            if sha.contains(':') {
                sha
            } else {
                format!("sha256:{sha}")
            }
        })
    });
    let mut reference = name;
    if let Some(tag) = &tag {
        reference = format!("{reference}:{tag}");
    }
    if let Some(digest) = &digest {
        reference = format!("{reference}@{digest}");
    }
    let explicit = tag.clone().or(digest.clone());
    Some((reference, explicit, key))
}

/// Image references in Helm values: `(path, reference as written, tag known)`.
fn images_in_values(
    value: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String, bool)>,
) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                path.push(key.clone());
                let imageish = key.to_ascii_lowercase().ends_with("image");
                match item {
                    Value::String(reference) if imageish => {
                        // `{repository, image, version}` is handled as a whole below.
                        if !(map.contains_key("repository") && key == "image") {
                            out.push((path.clone(), reference.clone(), true));
                        }
                    }
                    Value::Object(inner) if imageish => match image_map(inner) {
                        Some((reference, explicit, at)) => {
                            path.push(at.to_string());
                            out.push((path.clone(), reference, explicit.is_some()));
                            path.pop();
                        }
                        None => images_in_values(item, path, out),
                    },
                    _ => images_in_values(item, path, out),
                }
                path.pop();
            }
            if let Some((reference, explicit, at)) = image_map(map)
                .filter(|_| map.contains_key("repository") && map.contains_key("image"))
            {
                path.push(at.to_string());
                out.push((path.clone(), reference, explicit.is_some()));
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                images_in_values(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Image references in a manifest: every `image:` string.
fn images_in_manifest(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match item {
                    Value::String(reference) if key == "image" => out.push(reference.clone()),
                    _ => images_in_manifest(item, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| images_in_manifest(item, out)),
        _ => {}
    }
}

fn check_images(context: &Context<'_>) -> Vec<Finding> {
    // A profile whose sets do not load is reported by `kiln lock`; nothing to compare here.
    let Ok(requested) = crate::lock::requested(context.cluster) else {
        return Vec::new();
    };
    let mut pins: Vec<ImageRef> = requested
        .images
        .values()
        .filter_map(|pin| {
            let mut normalized = normalize(&pin.name, true)?;
            if normalized.digest.is_none() {
                normalized.digest = pin.digest.clone();
            }
            Some(normalized)
        })
        .collect();
    // Images kiln builds itself are in the bundle as much as pinned ones.
    pins.extend(
        requested
            .derived
            .keys()
            .filter_map(|name| normalize(name, true)),
    );
    let covered = |image: &ImageRef| {
        pins.iter().any(|pin| {
            pin.repository == image.repository
                && (image.tag.is_none() || pin.tag == image.tag)
                && (image.digest.is_none() || pin.digest == image.digest)
        })
    };
    let sets = context.cluster.settings.cluster.images.join(", ");
    let hint = |reference: &str| {
        format!(
            "add `[[image]] name = \"{reference}\"` to one of the cluster's sets (cluster.images \
             = [{sets}], files images/NAME.toml) and run `kiln lock`, or use an image a set \
             already pins"
        )
    };
    let mut findings = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for release in context.cluster.settings.helm.releases.keys() {
        let Some(values) = context.release_values(release) else {
            continue;
        };
        let mut found = Vec::new();
        images_in_values(&values, &mut Vec::new(), &mut found);
        for (path, reference, tag_known) in found {
            let Some(image) = normalize(&reference, tag_known) else {
                continue;
            };
            if covered(&image) || !seen.insert((release.clone(), reference.clone())) {
                continue;
            }
            let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
            findings.push(Finding::new(
                &IMAGE_NOT_PINNED,
                &context.at_value(release, &path_refs),
                format!(
                    "image `{reference}` (release `{release}`, {}) is not pinned by any of the \
                     cluster's image sets: `kiln fetch` does not bundle it and the nodes cannot \
                     pull it offline",
                    path.join(".")
                ),
                hint(&reference),
            ));
        }
    }
    for manifest in manifests(context) {
        for document in &manifest.documents {
            let mut found = Vec::new();
            images_in_manifest(&document.value, &mut found);
            for reference in found {
                let Some(image) = normalize(&reference, true) else {
                    continue;
                };
                if covered(&image) {
                    continue;
                }
                let file = manifest
                    .source
                    .as_ref()
                    .map(|file| file.display.clone())
                    .unwrap_or_else(|| manifest.path.clone());
                findings.push(Finding::new(
                    &IMAGE_NOT_PINNED,
                    &manifest.origin(document, &reference),
                    format!(
                        "image `{reference}` in {file} is not pinned by any of the cluster's \
                         image sets: `kiln fetch` does not bundle it and the nodes cannot pull \
                         it offline"
                    ),
                    hint(&reference),
                ));
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_containerd() {
        let image = normalize("busybox", true).unwrap();
        assert_eq!(image.repository, "docker.io/library/busybox");
        assert_eq!(image.tag.as_deref(), Some("latest"));
        let image = normalize("index.docker.io/grafana/grafana:12.1.1", true).unwrap();
        assert_eq!(image.repository, "docker.io/grafana/grafana");
        assert_eq!(image.tag.as_deref(), Some("12.1.1"));
        let image = normalize("localhost:5000/x/y@sha256:ab", true).unwrap();
        assert_eq!(image.repository, "localhost:5000/x/y");
        assert_eq!(image.tag, None);
        assert_eq!(image.digest.as_deref(), Some("sha256:ab"));
        assert_eq!(normalize("quay.io/a/b", false).unwrap().tag, None);
    }
}
