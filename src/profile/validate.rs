//! Validation: the only way to a `ValidCluster`.
//!
//! Typed reading (unknown keys, wrong types, missing values) happens here, then the checks
//! that need the whole cluster: duplicate names, MACs and addresses, addresses outside the
//! subnet, roles that need cluster settings, and secrets written inline. Every finding is
//! collected, so a user fixes a profile in one pass rather than one error at a time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::diag::{Diagnostic, Findings, Redaction};
use crate::profile::de::from_node;
use crate::profile::load::Profile;
use crate::profile::merge::Merged;
use crate::profile::model::{ClusterSettings, KubernetesRole, NodeSettings};
use crate::profile::source::Origin;
use crate::profile::value::{Node, Value};

/// A cluster that passed validation. Only [`validate`] makes one (`non_exhaustive` stops
/// code outside kiln's library from building one by hand).
#[derive(Debug)]
#[non_exhaustive]
pub struct ValidCluster {
    /// The profile directory (for its `templates/` and `manifests/`).
    pub profile_dir: PathBuf,
    /// Cluster-wide settings.
    pub settings: ClusterSettings,
    /// Nodes, in file order.
    pub nodes: Vec<ValidNode>,
    /// The cluster file's tree, for `--explain`.
    pub cluster_tree: Node,
}

/// A validated node.
#[derive(Debug)]
pub struct ValidNode {
    /// Name (key in `[nodes]`).
    pub name: String,
    /// Merged, typed settings.
    pub settings: NodeSettings,
    /// The layers applied, for display.
    pub layers: Vec<String>,
    /// The merged tree, for `--explain`.
    pub merged: Merged,
}

impl ValidNode {
    /// The host name: `hostname`, else the node's name.
    pub fn hostname(&self) -> &str {
        self.settings.hostname.as_deref().unwrap_or(&self.name)
    }

    /// The origin of a node setting (its value), or of the node's table.
    pub fn origin(&self, path: &[&str]) -> &Origin {
        self.merged.tree.origin_near(path)
    }
}

impl ValidCluster {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&ValidNode> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The first control plane (in file order): where addons and Helm releases are installed.
    pub fn first_control_plane(&self) -> Option<&ValidNode> {
        self.nodes
            .iter()
            .find(|node| node.settings.kubernetes == Some(KubernetesRole::ControlPlane))
    }

    /// The node that serves the NFS export.
    pub fn nfs_server(&self) -> Option<&ValidNode> {
        self.nodes.iter().find(|node| node.settings.nfs_server)
    }
}

/// Validate a loaded profile.
pub fn validate(profile: Profile) -> Result<ValidCluster, Findings> {
    let mut findings = Vec::new();
    let settings = match from_node::<ClusterSettings>(&profile.cluster_tree) {
        Ok(settings) => Some(settings),
        Err(diagnostic) => {
            findings.push(diagnostic);
            None
        }
    };
    let mut nodes = Vec::new();
    for layers in profile.nodes {
        match from_node::<NodeSettings>(&layers.merged.tree) {
            Ok(node_settings) => nodes.push(ValidNode {
                name: layers.name,
                settings: node_settings,
                layers: layers.layers,
                merged: layers.merged,
            }),
            Err(diagnostic) => {
                let same_place = diagnostic.origin.as_ref().map(Origin::location)
                    == Some(layers.origin.location());
                findings.push(if same_place {
                    diagnostic
                } else {
                    diagnostic.note(&layers.origin, format!("in node `{}`", layers.name))
                })
            }
        }
    }
    find_inline_secrets(&profile.cluster_tree, &mut Vec::new(), &mut findings);
    let Some(settings) = settings else {
        return Err(Findings(findings));
    };
    let cluster = ValidCluster {
        profile_dir: profile.dir,
        settings,
        nodes,
        cluster_tree: profile.cluster_tree,
    };
    check_cluster(&cluster, &mut findings);
    if findings.is_empty() {
        Ok(cluster)
    } else {
        Err(Findings(findings))
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_domain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn check_cluster(cluster: &ValidCluster, findings: &mut Vec<Diagnostic>) {
    let tree = &cluster.cluster_tree;
    let settings = &cluster.settings;
    let at = |path: &[&str]| tree.origin_near(path).clone();

    if !is_dns_label(&settings.cluster.name) {
        findings.push(
            Diagnostic::error(
                "invalid-value",
                format!(
                    "cluster name `{}` is not a DNS label",
                    settings.cluster.name
                ),
            )
            .at(&at(&["cluster", "name"]))
            .hint("use lower-case letters, digits and `-`, at most 63 characters"),
        );
    }
    let mut domains = vec![(at(&["cluster", "domain"]), &settings.cluster.domain)];
    for (index, domain) in settings.network.dns.search.iter().enumerate() {
        let index = index.to_string();
        domains.push((at(&["network", "dns", "search", &index]), domain));
    }
    for (origin, domain) in domains {
        if !is_domain(domain) {
            findings.push(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{domain}` is not a valid DNS domain"),
                )
                .at(&origin)
                .hint("use lower-case labels of letters, digits and `-`, separated by dots"),
            );
        }
    }
    if settings.network.dns.servers.is_empty() {
        findings.push(
            Diagnostic::error(
                "missing-value",
                "no DNS servers: every node needs at least one",
            )
            .at(&at(&["network", "dns", "servers"]))
            .hint("servers = [\"10.1.24.2\"]"),
        );
    }
    let subnet = settings.network.subnet;
    if let Some(gateway) = settings.network.gateway {
        if !subnet.contains(gateway) {
            findings.push(
                Diagnostic::error(
                    "outside-subnet",
                    format!("gateway {gateway} is outside the subnet {subnet}"),
                )
                .at(&at(&["network", "gateway"]))
                .note(&at(&["network", "subnet"]), "the subnet is set here"),
            );
        }
    }

    check_nodes(cluster, findings);
    check_roles(cluster, findings);

    if let Some(microk8s) = &settings.microk8s {
        if microk8s.track().is_none() {
            findings.push(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "MicroK8s channel `{}` has no version track",
                        microk8s.channel
                    ),
                )
                .at(&at(&["microk8s", "channel"]))
                .hint("pin a track such as `1.34/stable`: `latest` moves under you"),
            );
        }
        for (port, target) in &microk8s.ingress_tcp {
            let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
            let target_ok = target
                .split_once('/')
                .and_then(|(namespace, rest)| Some((namespace, rest.split_once(':')?)))
                .is_some_and(|(namespace, (service, target_port))| {
                    is_dns_label(namespace) && is_dns_label(service) && !target_port.is_empty()
                });
            if !port_ok || !target_ok {
                findings.push(
                    Diagnostic::error("invalid-value", format!("ingress TCP entry `{port}` = `{target}` is not `PORT = \"NAMESPACE/SERVICE:PORT\"`"))
                        .at(&at(&["microk8s", "ingress_tcp", port]))
                        .hint("\"2222\" = \"sai/jupyterhub-ssh:22\""),
                );
            }
        }
    }
    for (name, release) in &settings.helm.releases {
        for (what, value) in [("release name", name), ("namespace", &release.namespace)] {
            if !is_dns_label(value) {
                findings.push(
                    Diagnostic::error(
                        "invalid-value",
                        format!("{what} `{value}` is not a DNS label"),
                    )
                    .at(&at(&["helm", "releases", name]))
                    .hint("use lower-case letters, digits and `-`"),
                );
            }
        }
    }
}

fn check_nodes(cluster: &ValidCluster, findings: &mut Vec<Diagnostic>) {
    let subnet = cluster.settings.network.subnet;
    let mut hostnames: BTreeMap<&str, &ValidNode> = BTreeMap::new();
    let mut macs: BTreeMap<&str, &ValidNode> = BTreeMap::new();
    let mut addresses: BTreeMap<Ipv4Addr, &ValidNode> = BTreeMap::new();
    for node in &cluster.nodes {
        if !is_dns_label(&node.name) {
            findings.push(
                Diagnostic::error(
                    "invalid-value",
                    format!("node name `{}` is not a DNS label", node.name),
                )
                .at(&node.merged.tree.origin)
                .hint("use lower-case letters, digits and `-`, at most 63 characters"),
            );
        }
        if let Some(hostname) = &node.settings.hostname {
            if !is_dns_label(hostname) {
                findings.push(
                    Diagnostic::error(
                        "invalid-value",
                        format!("host name `{hostname}` is not a DNS label"),
                    )
                    .at(node.origin(&["hostname"])),
                );
            }
        }
        if let Some(first) = hostnames.insert(node.hostname(), node) {
            findings.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!(
                        "host name `{}` is used by nodes `{}` and `{}`",
                        node.hostname(),
                        first.name,
                        node.name
                    ),
                )
                .at(node.origin(&["hostname"]))
                .note(
                    first.origin(&["hostname"]),
                    format!("`{}` uses it here", first.name),
                ),
            );
        }
        if let Some(first) = macs.insert(node.settings.mac.as_str(), node) {
            findings.push(
                Diagnostic::error(
                    "duplicate-mac",
                    format!(
                        "MAC address {} is used by nodes `{}` and `{}`",
                        node.settings.mac, first.name, node.name
                    ),
                )
                .at(node.origin(&["mac"]))
                .note(
                    first.origin(&["mac"]),
                    format!("`{}` uses it here", first.name),
                )
                .hint(
                    "each node is chosen by its MAC at PXE boot and first boot: they must differ",
                ),
            );
        }
        let ip = node.settings.ip;
        if let Some(first) = addresses.insert(ip, node) {
            findings.push(
                Diagnostic::error(
                    "duplicate-ip",
                    format!(
                        "IP address {ip} is used by nodes `{}` and `{}`",
                        first.name, node.name
                    ),
                )
                .at(node.origin(&["ip"]))
                .note(
                    first.origin(&["ip"]),
                    format!("`{}` uses it here", first.name),
                ),
            );
        }
        if !subnet.contains(ip) {
            findings.push(
                Diagnostic::error(
                    "outside-subnet",
                    format!(
                        "node `{}` address {ip} is outside the subnet {subnet}",
                        node.name
                    ),
                )
                .at(node.origin(&["ip"]))
                .note(
                    cluster.cluster_tree.origin_near(&["network", "subnet"]),
                    "the subnet is set here",
                ),
            );
        } else if subnet.prefix < 31 && (ip == subnet.network() || ip == subnet.broadcast()) {
            findings.push(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "node `{}` address {ip} is the subnet's network or broadcast address",
                        node.name
                    ),
                )
                .at(node.origin(&["ip"])),
            );
        }
        if cluster.settings.network.gateway == Some(ip) {
            findings.push(
                Diagnostic::error(
                    "duplicate-ip",
                    format!("node `{}` address {ip} is the gateway's", node.name),
                )
                .at(node.origin(&["ip"])),
            );
        }
        if let Some(dns) = &node.settings.dns {
            if dns.servers.is_empty() {
                findings.push(
                    Diagnostic::error(
                        "missing-value",
                        format!("node `{}` overrides DNS with no servers", node.name),
                    )
                    .at(node.origin(&["dns", "servers"])),
                );
            }
        }
        if node.settings.containerd && node.settings.kubernetes.is_some() {
            findings.push(
                Diagnostic::error("conflict", format!("node `{}` sets both `containerd` and `kubernetes`", node.name))
                    .at(node.origin(&["containerd"]))
                    .hint("MicroK8s brings its own containerd; `containerd = true` is for nodes outside Kubernetes"),
            );
        }
    }
}

fn check_roles(cluster: &ValidCluster, findings: &mut Vec<Diagnostic>) {
    let settings = &cluster.settings;
    let kubernetes_nodes: Vec<&ValidNode> = cluster
        .nodes
        .iter()
        .filter(|node| node.settings.kubernetes.is_some())
        .collect();
    match (&settings.microk8s, kubernetes_nodes.first()) {
        (None, Some(node)) => findings.push(
            Diagnostic::error(
                "missing-value",
                format!(
                    "node `{}` is a Kubernetes node, but the cluster has no [microk8s] table",
                    node.name
                ),
            )
            .at(node.origin(&["kubernetes"]))
            .hint("add [microk8s] with channel and token, or drop the node's Kubernetes role"),
        ),
        (Some(_), _) if cluster.first_control_plane().is_none() => findings.push(
            Diagnostic::error(
                "missing-value",
                "the cluster has [microk8s] but no control-plane node",
            )
            .at(cluster.cluster_tree.origin_near(&["microk8s"]))
            .hint("give one node the `control-plane` role"),
        ),
        _ => {}
    }
    let nfs_servers: Vec<&ValidNode> = cluster
        .nodes
        .iter()
        .filter(|node| node.settings.nfs_server)
        .collect();
    match (&settings.nfs, nfs_servers.as_slice()) {
        (Some(_), []) => findings.push(
            Diagnostic::error(
                "missing-value",
                "the cluster has [nfs] but no node serves it",
            )
            .at(cluster.cluster_tree.origin_near(&["nfs"]))
            .hint("give one node the `nfs-server` role"),
        ),
        (Some(_), [_, second, ..]) => findings.push(
            Diagnostic::error(
                "conflict",
                format!(
                    "more than one NFS server: `{}` and `{}`",
                    nfs_servers[0].name, second.name
                ),
            )
            .at(second.origin(&["nfs_server"]))
            .note(nfs_servers[0].origin(&["nfs_server"]), "the first one"),
        ),
        (None, [server, ..]) => findings.push(
            Diagnostic::error(
                "missing-value",
                format!(
                    "node `{}` serves NFS, but the cluster has no [nfs] table",
                    server.name
                ),
            )
            .at(server.origin(&["nfs_server"]))
            .hint("add [nfs] with `export = \"/srv/nfs/k8s\"`"),
        ),
        _ => {}
    }
    if settings.nfs.is_none() {
        if let Some(client) = cluster.nodes.iter().find(|node| node.settings.nfs_client) {
            findings.push(
                Diagnostic::error(
                    "missing-value",
                    format!(
                        "node `{}` is an NFS client, but the cluster has no [nfs] table",
                        client.name
                    ),
                )
                .at(client.origin(&["nfs_client"])),
            );
        }
    }
    if let Some(nfs) = &settings.nfs {
        if !nfs.export.starts_with('/') {
            findings.push(
                Diagnostic::error(
                    "invalid-value",
                    format!("NFS export `{}` is not an absolute path", nfs.export),
                )
                .at(cluster.cluster_tree.origin_near(&["nfs", "export"])),
            );
        }
    }
}

/// Keys whose string values are secrets. Compared lower-case with `-` and `_` removed.
fn is_secret_key(key: &str) -> bool {
    let normalized: String = key
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    if normalized.starts_with("existing") {
        return false;
    }
    [
        "secret",
        "password",
        "passwd",
        "token",
        "privatekey",
        "hostkey",
        "apikey",
    ]
    .iter()
    .any(|suffix| normalized.ends_with(suffix))
}

/// Secrets written as plain strings anywhere in the cluster file (Helm values included).
fn find_inline_secrets(node: &Node, path: &mut Vec<String>, findings: &mut Vec<Diagnostic>) {
    match &node.value {
        // `{ secret = "NAME" }` is a reference, the right way to write a secret.
        Value::Table(table) if table.len() == 1 && table.contains_key("secret") => {}
        Value::Table(table) => {
            for (key, entry) in table {
                let inline = match &entry.node.value {
                    Value::String(text) => {
                        !text.is_empty()
                            && (is_secret_key(key) || text.contains("PRIVATE KEY-----"))
                    }
                    _ => false,
                };
                // Typed secret fields (microk8s.token, kubernetes.secrets.*.data) are reported
                // by the type check already; report each problem once.
                let typed = path.first().map(String::as_str) == Some("kubernetes")
                    || (path.first().map(String::as_str) == Some("microk8s") && key == "token");
                if inline && !typed {
                    findings.push(
                        Diagnostic::error("inline-secret", format!("`{}` holds a secret written inline", dotted(path, key)))
                            .at(&entry.node.origin)
                            .redact(Redaction::Span)
                            .hint(format!("write `{key} = {{ secret = \"NAME\" }}` and give the value in a secrets file (--secrets FILE) or as KILN_SECRET_NAME")),
                    );
                }
                path.push(key.clone());
                find_inline_secrets(&entry.node, path, findings);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                find_inline_secrets(item, path, findings);
                path.pop();
            }
        }
        _ => {}
    }
}

fn dotted(path: &[String], key: &str) -> String {
    let mut parts: Vec<&str> = path.iter().map(String::as_str).collect();
    parts.push(key);
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "client_secret",
            "clientSecret",
            "password",
            "secretToken",
            "hostKey",
            "cookieSecret",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["existingSecret", "secretName", "tokenTTL", "key", "name"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
