//! GPU rules: what a GPU node needs to run GPU pods on an air-gapped MicroK8s cluster.
//!
//! The seed's admin found GPU pods of JupyterHub unschedulable until GPU support was
//! enabled. kiln's answer is the host driver from the bundle plus NVIDIA's gpu-operator as a
//! Helm release (MicroK8s' own `nvidia`/`gpu` addon downloads its chart at enable time).

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};
use crate::lock::pins::{self, FilePin};
use crate::profile::model::GpuModule;
use crate::profile::source::Origin;
use crate::profile::ValidNode;

/// The rules of this module.
pub const RULES: &[Rule] = &[
    GPU_NO_OPERATOR,
    GPU_NO_DRIVER_PIN,
    GPU_ADDON_AIRGAPPED,
    JUPYTERHUB_GPU_WITHOUT_GPU_NODE,
];

/// GPU nodes in Kubernetes, but nothing that runs the device plugin.
pub const GPU_NO_OPERATOR: Rule = Rule {
    id: "gpu-no-operator",
    severity: Severity::Error,
    title: "GPU nodes but no gpu-operator Helm release: pods cannot request nvidia.com/gpu",
    check: check_no_operator,
};

/// A GPU node whose driver comes from nowhere.
pub const GPU_NO_DRIVER_PIN: Rule = Rule {
    id: "gpu-no-driver-pin",
    severity: Severity::Error,
    title: "a GPU node's NVIDIA driver branch is pinned by no file pin and no OS package",
    check: check_no_driver_pin,
};

/// MicroK8s' GPU addon fetches its chart from the internet.
pub const GPU_ADDON_AIRGAPPED: Rule = Rule {
    id: "gpu-addon-airgapped",
    severity: Severity::Error,
    title:
        "MicroK8s' nvidia/gpu addon on an air-gapped cluster: it downloads its chart when enabled",
    check: check_addon_airgapped,
};

/// A JupyterHub profile asks for GPUs no node has.
pub const JUPYTERHUB_GPU_WITHOUT_GPU_NODE: Rule = Rule {
    id: "jupyterhub-gpu-profile-without-gpu-node",
    severity: Severity::Error,
    title: "a JupyterHub profile requests nvidia.com/gpu but no Kubernetes node has a GPU",
    check: check_jupyterhub_gpu,
};

/// Kubernetes nodes with `gpu`.
fn gpu_kubernetes_nodes<'a>(context: &'a Context<'_>) -> Vec<&'a ValidNode> {
    context
        .cluster
        .nodes
        .iter()
        .filter(|node| node.settings.gpu.is_some() && node.settings.kubernetes.is_some())
        .collect()
}

/// MicroK8s GPU addons that are enabled, by name.
fn enabled_gpu_addons<'a>(context: &'a Context<'_>) -> Vec<&'a str> {
    let Some(microk8s) = &context.cluster.settings.microk8s else {
        return Vec::new();
    };
    microk8s
        .addons
        .iter()
        .filter(|(name, addon)| addon.enabled && (*name == "nvidia" || *name == "gpu"))
        .map(|(name, _)| name.as_str())
        .collect()
}

fn check_no_operator(context: &Context<'_>) -> Vec<Finding> {
    let nodes = gpu_kubernetes_nodes(context);
    let Some(first) = nodes.first() else {
        return Vec::new();
    };
    // With MicroK8s' addon enabled the operator comes from there (on a cluster with a route
    // out); `gpu-addon-airgapped` reports it when there is none.
    if !context.releases_of_chart("gpu-operator").is_empty()
        || !enabled_gpu_addons(context).is_empty()
    {
        return Vec::new();
    }
    let names: Vec<String> = nodes
        .iter()
        .map(|node| format!("`{}`", node.name))
        .collect();
    vec![Finding::new(
        &GPU_NO_OPERATOR,
        first.origin(&["gpu"]),
        format!(
            "GPU node(s) {} join Kubernetes, but no Helm release installs chart `gpu-operator`: no device plugin advertises nvidia.com/gpu and GPU pods stay Pending",
            names.join(", ")
        ),
        "add `[helm.releases.gpu-operator]` with chart = \"gpu-operator\", repository = \"https://helm.ngc.nvidia.com/nvidia\", version = \"v25.3.2\", namespace = \"gpu-operator-resources\" (kiln's defaults use the host driver and MicroK8s' containerd), and the `gpu-operator` pin set in [cluster] images",
    )]
}

/// True when `text` mentions `branch` as a whole token: the characters around it are not
/// letters or digits (so `580` matches `nvidia-driver-580_580.95` but not `5800`).
fn mentions_token(text: &str, branch: &str) -> bool {
    if branch.is_empty() {
        return false;
    }
    text.match_indices(branch).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + branch.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// A file pin provides the driver branch when its name or URL mentions `nvidia` and the
/// branch (e.g. name `nvidia-driver-580-server`, or a URL ending in
/// `nvidia-headless-580-server_580.95.05-0ubuntu1_amd64.deb`).
fn file_provides(file: &FilePin, branch: &str) -> bool {
    [&file.name, &file.url].iter().any(|text| {
        let text = text.to_ascii_lowercase();
        text.contains("nvidia") && mentions_token(&text, branch)
    })
}

/// An OS package provides the driver branch when it is `nvidia-*` and names the branch as a
/// token, as Ubuntu's driver packages do: `nvidia-driver-580-server`,
/// `nvidia-headless-580-server-open`, `nvidia-utils-580-server`.
fn package_provides(package: &str, branch: &str) -> bool {
    let package = package.to_ascii_lowercase();
    package
        .strip_prefix("nvidia-")
        .is_some_and(|rest| mentions_token(rest, branch))
}

/// Every `[[file]]` of the cluster's pin sets. Sets that do not load are skipped here:
/// `kiln lock` names them.
fn pinned_files(context: &Context<'_>) -> Vec<FilePin> {
    let cluster = context.cluster;
    let mut files = Vec::new();
    for (index, name) in cluster.settings.cluster.images.iter().enumerate() {
        let origin = context.at(&["cluster", "images", &index.to_string()]);
        if let Ok(sets) = pins::load_sets(&cluster.profile_dir, &[(name.clone(), origin)]) {
            files.extend(sets.into_iter().flat_map(|loaded| loaded.set.files));
        }
    }
    files
}

fn check_no_driver_pin(context: &Context<'_>) -> Vec<Finding> {
    let gpu_nodes: Vec<&ValidNode> = context
        .cluster
        .nodes
        .iter()
        .filter(|node| node.settings.gpu.is_some())
        .collect();
    if gpu_nodes.is_empty() {
        return Vec::new();
    }
    let files = pinned_files(context);
    let mut findings = Vec::new();
    for node in gpu_nodes {
        let gpu = node.settings.gpu.as_ref().expect("filtered on gpu");
        let branch = gpu.driver.trim().to_ascii_lowercase();
        let pinned = files.iter().any(|file| file_provides(file, &branch))
            || node
                .settings
                .packages
                .iter()
                .any(|package| package_provides(package, &branch));
        if pinned {
            continue;
        }
        // Ubuntu names the open kernel modules' packages with `-open`.
        let flavour = match gpu.module {
            GpuModule::Open => "-open",
            GpuModule::Proprietary => "",
        };
        findings.push(Finding::new(
            &GPU_NO_DRIVER_PIN,
            node.origin(&["gpu", "driver"]),
            format!(
                "node `{}` needs NVIDIA driver {}, but no pin set in [cluster] images has a [[file]] for it and the node's packages hold no `nvidia-*-{}` package: first boot finds no driver to install and fails",
                node.name, gpu.driver, branch
            ),
            format!(
                "add a pin for the driver packages to a set in [cluster] images, e.g. `[[file]] name = \"nvidia-headless-{branch}{flavour}\"` with the package's `url` (kiln lock pins its sha256), or give the node `\"packages+\" = [\"nvidia-headless-{branch}{flavour}\", \"nvidia-utils-{branch}\"]`"
            ),
        ));
    }
    findings
}

fn check_addon_airgapped(context: &Context<'_>) -> Vec<Finding> {
    if !context.cluster.settings.cluster.airgapped {
        return Vec::new();
    }
    let operator = context.releases_of_chart("gpu-operator").first().copied();
    enabled_gpu_addons(context)
        .into_iter()
        .map(|name| {
            let hint = match operator {
                Some(release) => format!(
                    "remove `[microk8s.addons.{name}]`: release `{release}` already installs the bundled gpu-operator chart, with kiln's defaults for MicroK8s (host driver, MicroK8s' containerd paths)"
                ),
                None => format!(
                    "remove `[microk8s.addons.{name}]` and install the bundled chart instead: `[helm.releases.gpu-operator]` with chart = \"gpu-operator\", repository = \"https://helm.ngc.nvidia.com/nvidia\" (kiln's defaults for it reproduce the addon's settings for MicroK8s: host driver, MicroK8s' containerd paths)"
                ),
            };
            Finding::new(
                &GPU_ADDON_AIRGAPPED,
                &context.at(&["microk8s", "addons", name]),
                format!(
                    "MicroK8s addon `{name}` is enabled on an air-gapped cluster: it downloads the gpu-operator chart from https://helm.ngc.nvidia.com/nvidia when enabled, which fails without a route out"
                ),
                hint,
            )
        })
        .collect()
}

/// The value at `path` below `value`.
fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A limit that asks for something: not zero, not empty.
fn asks_for(limit: &Value) -> bool {
    match limit {
        Value::Null => false,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => {
            let text = text.trim();
            !text.is_empty() && text.parse::<f64>().ok() != Some(0.0)
        }
        _ => true,
    }
}

fn check_jupyterhub_gpu(context: &Context<'_>) -> Vec<Finding> {
    if !gpu_kubernetes_nodes(context).is_empty() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for release in context.releases_of_chart("jupyterhub") {
        let Some(values) = context.release_values(release) else {
            continue;
        };
        let Some(Value::Array(profiles)) = get(&values, &["singleuser", "profileList"]) else {
            continue;
        };
        for (index, profile) in profiles.iter().enumerate() {
            let Some(limit) = get(
                profile,
                &[
                    "kubespawner_override",
                    "extra_resource_limits",
                    "nvidia.com/gpu",
                ],
            ) else {
                continue;
            };
            if !asks_for(limit) {
                continue;
            }
            let index = index.to_string();
            let name = get(profile, &["display_name"])
                .and_then(Value::as_str)
                .map(|name| format!("`{name}`"))
                .unwrap_or_else(|| format!("#{index}"));
            let origin: Origin = context.at_value(
                release,
                &[
                    "singleuser",
                    "profileList",
                    &index,
                    "kubespawner_override",
                    "extra_resource_limits",
                ],
            );
            let shown = match limit {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            findings.push(Finding::new(
                &JUPYTERHUB_GPU_WITHOUT_GPU_NODE,
                &origin,
                format!(
                    "profile {name} of JupyterHub release `{release}` asks for nvidia.com/gpu = {shown}, but no Kubernetes node has `gpu`: its user servers stay Pending"
                ),
                "give the GPU workers `roles = [\"gpu-worker\"]` (or `gpu = { driver = \"580-server\" }` with `kubernetes = \"worker\"`), or remove the profile's `extra_resource_limits = { \"nvidia.com/gpu\" = ... }`",
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_branch_matching() {
        let file = |name: &str, url: &str| FilePin {
            name: name.into(),
            url: url.into(),
            digest: None,
            size: None,
        };
        assert!(file_provides(
            &file("nvidia-driver-580-server", "https://example.org/x.deb"),
            "580-server"
        ));
        assert!(file_provides(
            &file(
                "driver",
                "https://example.org/pool/nvidia-headless-580-server_580.95.05-0ubuntu1_amd64.deb"
            ),
            "580-server"
        ));
        assert!(file_provides(
            &file("NVIDIA-Linux-x86_64-580.95.05.run", "https://e.org/a"),
            "580"
        ));
        assert!(!file_provides(
            &file("nvidia-driver-550-server", "https://e.org/a"),
            "580-server"
        ));
        assert!(!file_provides(
            &file("cuda-580-server", "https://e.org/a"),
            "580-server"
        ));
        assert!(!file_provides(
            &file("nvidia-5800", "https://e.org/a"),
            "580"
        ));
        assert!(package_provides("nvidia-driver-580-server", "580-server"));
        assert!(package_provides(
            "nvidia-headless-580-server-open",
            "580-server"
        ));
        assert!(!package_provides("nvidia-driver-580", "580-server"));
        assert!(!package_provides("libnvidia-gl-580-server", "580-server"));
    }
}
