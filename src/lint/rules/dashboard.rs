//! The Kubernetes dashboard: never bound to cluster-admin.
//!
//! Also the reader of rendered manifests the application rules share.

use std::sync::Arc;

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::rules::jupyterhub::{get_str, is_true};
use crate::lint::{Context, Finding, Rule};
use crate::profile::source::{Origin, SourceFile};
use crate::profile::value::{Node, Value as TreeValue};

/// The rules of this module.
pub const RULES: &[Rule] = &[CLUSTER_ADMIN];

/// The dashboard with cluster-admin.
pub const CLUSTER_ADMIN: Rule = Rule {
    id: "dashboard-cluster-admin",
    severity: Severity::Error,
    title: "The Kubernetes dashboard is given cluster-admin",
    check: check_cluster_admin,
};

/// One YAML document of a rendered manifest.
pub(crate) struct Document {
    /// The document, parsed.
    pub value: Value,
    /// Its text.
    pub text: String,
    /// Byte offset of its text in the file.
    pub offset: usize,
}

/// A manifest the first control plane applies.
pub(crate) struct Manifest {
    /// Path in the rendered tree (`root/etc/kiln/manifests/50-dashboard-viewer.yaml`).
    pub path: String,
    /// The profile file it was copied from (`manifests/NAME`), if any.
    pub source: Option<Arc<SourceFile>>,
    /// Where findings in a manifest kiln wrote point: the setting it comes from.
    pub fallback: Origin,
    /// Its documents.
    pub documents: Vec<Document>,
}

impl Manifest {
    /// The origin of `needle` in `document` (in the profile's file), else the fallback.
    pub fn origin(&self, document: &Document, needle: &str) -> Origin {
        match &self.source {
            Some(file) => {
                let start = document
                    .text
                    .find(needle)
                    .map(|index| document.offset + index)
                    .unwrap_or(document.offset);
                Origin::file(file, start..start + needle.len())
            }
            None => self.fallback.clone(),
        }
    }
}

/// Split YAML text into documents with their byte offsets.
fn documents(text: &str) -> Vec<Document> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if offset > 0 && (trimmed == "---" || trimmed.starts_with("--- ")) {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(text.len());
    starts
        .windows(2)
        .filter_map(|bounds| {
            let text = &text[bounds[0]..bounds[1]];
            let value: Value = serde_yaml::from_str(text).ok()?;
            (!value.is_null()).then(|| Document {
                value,
                text: text.to_string(),
                offset: bounds[0],
            })
        })
        .collect()
}

/// Every manifest rendered for the first control plane (kiln's and the profile's).
pub(crate) fn manifests(context: &Context<'_>) -> Vec<Manifest> {
    let Some(first) = context.cluster.first_control_plane() else {
        return Vec::new();
    };
    let Some(tree) = context.rendered.nodes.get(&first.name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (path, file) in &tree.files {
        let Some(name) = path.strip_prefix("root/etc/kiln/manifests/") else {
            continue;
        };
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let text = String::from_utf8_lossy(&file.contents).to_string();
        let (source, fallback) = if let Some(own) = name.strip_prefix("50-") {
            let on_disk = context.cluster.profile_dir.join("manifests").join(own);
            (
                Some(SourceFile::new(&on_disk, text.clone())),
                Origin::Default,
            )
        } else if let Some(secret) = name
            .strip_prefix("10-secret-")
            .and_then(|rest| rest.strip_suffix(".yaml"))
        {
            (None, context.at(&["kubernetes", "secrets", secret]))
        } else if name.starts_with("20-ingress-tcp") {
            (None, context.at(&["microk8s", "ingress_tcp"]))
        } else {
            (None, context.at(&[]))
        };
        out.push(Manifest {
            path: path.clone(),
            source,
            fallback,
            documents: documents(&text),
        });
    }
    out
}

/// Whether a binding subject is the dashboard's.
fn dashboard_subject(subject: &Value) -> bool {
    let namespace = get_str(subject, &["namespace"]).unwrap_or_default();
    let name = get_str(subject, &["name"]).unwrap_or_default();
    namespace == "kubernetes-dashboard" || name.to_ascii_lowercase().contains("dashboard")
}

const HINT: &str = "bind the dashboard's account to a least-privilege role instead (the \
    ClusterRole `view`, as the sai profile's manifests/dashboard-viewer.yaml does) and log in \
    with `microk8s kubectl -n kubernetes-dashboard create token NAME`";

/// Profile values of a dashboard release that grant cluster-admin.
fn walk_values<'a>(node: &'a Node, path: &mut Vec<String>, out: &mut Vec<(String, &'a Node)>) {
    match &node.value {
        TreeValue::Table(table) => {
            for (key, entry) in table {
                path.push(key.clone());
                let grants = key == "clusterAdminRole" && is_true(&entry.node.to_json());
                if grants {
                    out.push((path.join("."), &entry.node));
                } else {
                    walk_values(&entry.node, path, out);
                }
                path.pop();
            }
        }
        TreeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                walk_values(item, path, out);
                path.pop();
            }
        }
        TreeValue::String(text) if text.contains("cluster-admin") => {
            out.push((path.join("."), node));
        }
        _ => {}
    }
}

fn check_cluster_admin(context: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for manifest in manifests(context) {
        for document in &manifest.documents {
            let kind = get_str(&document.value, &["kind"]).unwrap_or_default();
            if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
                continue;
            }
            if get_str(&document.value, &["roleRef", "name"]) != Some("cluster-admin") {
                continue;
            }
            let Some(subject) = document
                .value
                .get("subjects")
                .and_then(Value::as_array)
                .and_then(|subjects| subjects.iter().find(|s| dashboard_subject(s)))
            else {
                continue;
            };
            let binding = get_str(&document.value, &["metadata", "name"]).unwrap_or("?");
            let who = format!(
                "{} {}{}",
                get_str(subject, &["kind"]).unwrap_or("subject"),
                get_str(subject, &["namespace"])
                    .map(|namespace| format!("{namespace}/"))
                    .unwrap_or_default(),
                get_str(subject, &["name"]).unwrap_or("?"),
            );
            let file = manifest
                .source
                .as_ref()
                .map(|file| file.display.clone())
                .unwrap_or_else(|| manifest.path.clone());
            findings.push(Finding::new(
                &CLUSTER_ADMIN,
                &manifest.origin(document, "cluster-admin"),
                format!(
                    "{kind} `{binding}` in {file} binds cluster-admin to the dashboard's {who}: \
                     anyone holding its token (or reaching the dashboard) controls the whole \
                     cluster"
                ),
                HINT,
            ));
        }
    }
    for release in context.releases_of_chart("kubernetes-dashboard") {
        let path = ["helm", "releases", release, "values"];
        let Some(node) = context.cluster.cluster_tree.lookup(&path) else {
            continue;
        };
        let mut found = Vec::new();
        let mut walked: Vec<String> = Vec::new();
        walk_values(node, &mut walked, &mut found);
        for (at, node) in found {
            findings.push(Finding::new(
                &CLUSTER_ADMIN,
                &node.origin,
                format!(
                    "release `{release}` (the Kubernetes dashboard) grants cluster-admin in \
                     `{at}`: anyone holding the dashboard's token controls the whole cluster"
                ),
                format!("remove `{at}` from [helm.releases.{release}.values]; {HINT}"),
            ));
        }
    }
    if let Some(microk8s) = &context.cluster.settings.microk8s {
        if microk8s
            .addons
            .get("dashboard")
            .is_some_and(|addon| addon.enabled)
        {
            findings.push(Finding::new(
                &CLUSTER_ADMIN,
                &context.at(&["microk8s", "addons", "dashboard"]),
                "the MicroK8s `dashboard` addon is enabled: its setup binds the dashboard to \
                 cluster-admin (in older versions) and the official login guide creates a \
                 cluster-admin token, which the hand-built cluster did",
                "remove [microk8s.addons.dashboard] and install the dashboard as a Helm \
                 release of chart `kubernetes-dashboard` (namespace kubernetes-dashboard) with \
                 a least-privilege ServiceAccount bound to `view` in manifests/",
            ));
        }
    }
    findings
}
