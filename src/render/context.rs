//! The data templates see: the validated cluster, turned into plain JSON with the derived
//! values (effective DNS, join URL, dns addon upstreams, NFS server address, ...) computed
//! once here rather than in every template.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::diag::{Diagnostic, Findings};
use crate::profile::model::{KubernetesRole, KubernetesSecret, Mirror, SecretRef};
use crate::profile::source::Origin;
use crate::profile::{ValidCluster, ValidNode};

/// Port of MicroK8s' cluster agent, which serves joins.
const CLUSTER_AGENT_PORT: u16 = 25000;

/// Every secret the cluster refers to, with where.
pub fn secret_references(cluster: &ValidCluster) -> Vec<(SecretRef, Origin)> {
    let tree = &cluster.cluster_tree;
    let mut references = Vec::new();
    if let Some(microk8s) = &cluster.settings.microk8s {
        references.push((
            microk8s.token.clone(),
            tree.origin_near(&["microk8s", "token"]).clone(),
        ));
    }
    for (name, secret) in &cluster.settings.kubernetes.secrets {
        for (key, reference) in &secret.data {
            let origin = tree
                .origin_near(&["kubernetes", "secrets", name, "data", key])
                .clone();
            references.push((reference.clone(), origin));
        }
    }
    references.extend(value_secret_references(cluster));
    references
}

/// Secret references inside Helm values (`{ secret = "NAME" }` tables). They are parsed
/// here rather than in the typed model because values are free-form.
fn value_secret_references(cluster: &ValidCluster) -> Vec<(SecretRef, Origin)> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = secret_name(value) {
                    out.push((path.clone(), name.to_string()));
                    return;
                }
                for (key, inner) in map {
                    path.push(key.clone());
                    walk(inner, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    path.push(index.to_string());
                    walk(inner, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (release, settings) in &cluster.settings.helm.releases {
        let mut found = Vec::new();
        walk(
            &Value::Object(settings.values.clone()),
            &mut Vec::new(),
            &mut found,
        );
        for (path, name) in found {
            let mut full = vec!["helm", "releases", release.as_str(), "values"];
            full.extend(path.iter().map(String::as_str));
            let origin = cluster.cluster_tree.origin_near(&full).clone();
            out.push((SecretRef { name }, origin));
        }
    }
    out
}

/// The secret name if `value` is exactly `{ "secret": "NAME" }`.
fn secret_name(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) if map.len() == 1 => map.get("secret")?.as_str(),
        _ => None,
    }
}

/// True when a values tree refers to a secret anywhere.
fn contains_secret_reference(value: &Value) -> bool {
    if secret_name(value).is_some() {
        return true;
    }
    match value {
        Value::Object(map) => map.values().any(contains_secret_reference),
        Value::Array(items) => items.iter().any(contains_secret_reference),
        _ => false,
    }
}

/// Replace every `{ secret = "NAME" }` with the secret's value.
fn resolve_secrets(value: &mut Value, secrets: &BTreeMap<String, String>) {
    if let Some(name) = secret_name(value) {
        let resolved = secrets
            .get(name)
            .cloned()
            .expect("every reference was resolved before rendering");
        *value = Value::String(resolved);
        return;
    }
    match value {
        Value::Object(map) => map
            .values_mut()
            .for_each(|inner| resolve_secrets(inner, secrets)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|inner| resolve_secrets(inner, secrets)),
        _ => {}
    }
}

/// Helm's merge: maps merge key by key; anything else in `overlay` replaces.
pub fn merge_values(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base_map), Value::Object(overlay_map)) => {
            for (key, value) in overlay_map {
                match base_map.get_mut(key) {
                    Some(existing) => merge_values(existing, value),
                    None => {
                        base_map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Releases with their final values: kiln's defaults for the chart (a rendered TOML
/// template, when kiln has one) with the profile's values merged over them, secrets resolved.
pub fn releases(
    cluster: &ValidCluster,
    secrets: &BTreeMap<String, String>,
    mut defaults: impl FnMut(&str, tera::Context) -> Result<Option<String>, Diagnostic>,
) -> Result<Vec<Value>, Findings> {
    let mut out = Vec::new();
    for (name, release) in &cluster.settings.helm.releases {
        let mut extra = tera::Context::new();
        extra.insert(
            "release",
            &json!({ "name": name, "namespace": release.namespace, "chart": release.chart, "version": release.version }),
        );
        let mut values = Value::Object(Map::new());
        if let Some(text) = defaults(&release.chart, extra)? {
            let parsed: toml::Table = toml::from_str(&text).map_err(|error| {
                Diagnostic::error(
                    "template",
                    format!("kiln's defaults for chart `{}` are not valid TOML after rendering: {error}", release.chart),
                )
            })?;
            values = serde_json::to_value(parsed).expect("TOML tables convert to JSON");
        }
        merge_values(&mut values, &Value::Object(release.values.clone()));
        let holds_secrets = contains_secret_reference(&values);
        resolve_secrets(&mut values, secrets);
        out.push(json!({
            "holds_secrets": holds_secrets,
            "name": name,
            "chart": release.chart,
            "repository": release.repository,
            "version": release.version,
            "namespace": release.namespace,
            "values": values,
        }));
    }
    Ok(out)
}

/// A Kubernetes Secret's data with values resolved.
pub fn kubernetes_secret(
    name: &str,
    secret: &KubernetesSecret,
    secrets: &BTreeMap<String, String>,
) -> Value {
    let data: Map<String, Value> = secret
        .data
        .iter()
        .map(|(key, reference)| {
            let value = secrets
                .get(&reference.name)
                .cloned()
                .expect("every reference was resolved before rendering");
            (key.clone(), Value::String(value))
        })
        .collect();
    json!({ "name": name, "namespace": secret.namespace, "type": secret.kind, "data": data })
}

/// Manifests a profile ships in its `manifests/` directory, sorted by name.
pub fn profile_manifests(cluster: &ValidCluster) -> Result<Vec<(String, String)>, Diagnostic> {
    let dir = cluster.profile_dir.join("manifests");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let io = |error: std::io::Error| Diagnostic::error("io", error.to_string());
    let mut out = Vec::new();
    for entry in fs_err::read_dir(&dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            out.push((name, fs_err::read_to_string(&path).map_err(io)?));
        }
    }
    out.sort();
    Ok(out)
}

/// systemd's name for the mount unit of a path (`/srv/shared` → `srv-shared.mount`).
pub fn mount_unit_name(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-.mount".to_string();
    }
    let mut name = String::new();
    for (index, byte) in trimmed.bytes().enumerate() {
        match byte {
            b'/' => name.push('-'),
            b'.' if index == 0 => name.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => name.push(byte as char),
            other => name.push_str(&format!("\\x{other:02x}")),
        }
    }
    format!("{name}.mount")
}

/// Upstream registry endpoints, for the `server` line of hosts.toml.
fn upstream_server(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        other => format!("https://{other}"),
    }
}

/// What `containerd/hosts.toml` sees as `registry`.
pub fn registry_context(registry: &str, mirror: &Mirror) -> Value {
    json!({
        "name": registry,
        "server": upstream_server(registry),
        "endpoints": mirror.endpoints,
        "ca": mirror.ca,
    })
}

/// The context shared by every template of one node.
pub fn node_context(
    cluster: &ValidCluster,
    node: &ValidNode,
    secrets: &BTreeMap<String, String>,
) -> tera::Context {
    let settings = &cluster.settings;
    let network = &settings.network;
    let dns = node.settings.dns.as_ref().unwrap_or(&network.dns);
    let first_control_plane = cluster.first_control_plane();
    let is_first_control_plane = first_control_plane.is_some_and(|first| first.name == node.name);
    let fqdn = format!("{}.{}", node.hostname(), settings.cluster.domain);

    let mut context = tera::Context::new();
    context.insert("cluster", &settings.cluster);
    // Every node's names and address, for the cluster's DNS server.
    context.insert(
        "hosts",
        &cluster
            .nodes
            .iter()
            .map(|other| {
                json!({
                    "hostname": other.hostname(),
                    "fqdn": format!("{}.{}", other.hostname(), settings.cluster.domain),
                    "ip": other.settings.ip,
                })
            })
            .collect::<Vec<_>>(),
    );
    context.insert("admin", &settings.admin);
    context.insert(
        "network",
        &json!({
            "subnet": network.subnet.to_string(),
            "prefix": network.subnet.prefix,
            "gateway": network.gateway,
            "ntp": network.ntp,
            "mtu": network.mtu,
            "dns": network.dns,
        }),
    );
    let kubernetes = node.settings.kubernetes.map(|role| match role {
        KubernetesRole::ControlPlane => "control-plane",
        KubernetesRole::Worker => "worker",
    });
    context.insert(
        "node",
        &json!({
            "name": node.name,
            "hostname": node.hostname(),
            "fqdn": fqdn,
            "mac": node.settings.mac,
            "ip": node.settings.ip,
            "address": format!("{}/{}", node.settings.ip, network.subnet.prefix),
            "interface": node.settings.interface,
            "dns": dns,
            "kubernetes": kubernetes,
            "first_control_plane": is_first_control_plane,
            "gpu": node.settings.gpu,
            "nfs_server": node.settings.nfs_server,
            "dns_server": node.settings.dns_server,
            "nfs_client": node.settings.nfs_client,
            "containerd": node.settings.containerd,
            "packages": node.settings.packages,
            "labels": node.settings.labels,
            "kernel_cmdline": node.settings.kernel_cmdline,
            "roles": node.settings.roles,
        }),
    );

    let microk8s = settings.microk8s.as_ref().map(|microk8s| {
        let token = secrets
            .get(&microk8s.token.name)
            .cloned()
            .expect("every reference was resolved before rendering");
        let first =
            first_control_plane.expect("validation requires a control plane with [microk8s]");
        let addons: Vec<Value> = microk8s
            .addons
            .iter()
            .map(|(name, addon)| {
                let mut args = addon.args.clone();
                // The dns addon otherwise falls back to the host's resolv.conf or 8.8.8.8,
                // which an air-gapped node cannot reach: give it the cluster's servers.
                if name == "dns" && args.is_empty() && addon.enabled {
                    let upstreams: Vec<String> =
                        dns.servers.iter().map(ToString::to_string).collect();
                    args.push(upstreams.join(","));
                }
                json!({ "name": name, "enabled": addon.enabled, "args": args })
            })
            .collect();
        let mut extra_sans = vec![node.settings.ip.to_string(), fqdn.clone()];
        extra_sans.extend(microk8s.extra_sans.iter().cloned());
        let mut kubelet_args: Map<String, Value> = microk8s
            .kubelet_args
            .iter()
            .map(|(flag, value)| (flag.clone(), Value::String(value.clone())))
            .collect();
        if !node.settings.labels.is_empty() {
            let labels: Vec<String> = node
                .settings
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            kubelet_args.insert("--node-labels".into(), Value::String(labels.join(",")));
        }
        let ingress_tcp: Vec<Value> = microk8s
            .ingress_tcp
            .iter()
            .map(|(port, target)| json!({ "port": port, "target": target }))
            .collect();
        json!({
            "channel": microk8s.channel,
            "launch_config_version": microk8s.launch_config_version(),
            "token": token,
            "join_url": format!("{}:{CLUSTER_AGENT_PORT}/{token}", first.settings.ip),
            "first_control_plane": { "name": first.name, "ip": first.settings.ip },
            "addons": addons,
            "extra_sans": extra_sans,
            "kubelet_args": kubelet_args,
            "apiserver_args": microk8s.apiserver_args,
            "ingress_tcp": ingress_tcp,
        })
    });
    context.insert("microk8s", &microk8s);

    let nfs = settings.nfs.as_ref().map(|nfs| {
        let server = cluster
            .nfs_server()
            .expect("validation requires an NFS server with [nfs]");
        let clients = if nfs.clients.is_empty() {
            vec![network.subnet.to_string()]
        } else {
            nfs.clients.clone()
        };
        let options = nfs.options.join(",");
        let exports_line = format!(
            "{} {}",
            nfs.export,
            clients
                .iter()
                .map(|client| format!("{client}({options})"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        json!({
            "export": nfs.export,
            "clients": clients,
            "options": nfs.options,
            "exports_line": exports_line,
            "mount_point": nfs.mount_point,
            "mount_options": nfs.mount_options,
            "mount_unit": nfs.mount_point.as_deref().map(mount_unit_name),
            "server": { "name": server.name, "ip": server.settings.ip },
        })
    });
    context.insert("nfs", &nfs);
    context.insert("stages", &stages(node, is_first_control_plane));
    let charts: Map<String, Value> = settings
        .helm
        .releases
        .iter()
        .map(|(name, release)| {
            (
                release.chart.clone(),
                json!({ "name": name, "namespace": release.namespace }),
            )
        })
        .collect();
    context.insert("charts", &charts);
    context
}

/// The first-boot stages of a node, in order (see DESIGN.md, "First boot").
pub fn stages(node: &ValidNode, first_control_plane: bool) -> Vec<&'static str> {
    let mut stages = vec!["network"];
    if node.settings.gpu.is_some() {
        stages.push("nvidia");
    }
    if node.settings.nfs_server {
        stages.push("nfs-server");
    }
    if node.settings.nfs_client {
        stages.push("nfs-client");
    }
    if node.settings.containerd {
        stages.extend(["containerd", "images"]);
    }
    if node.settings.kubernetes.is_some() {
        // Images are staged before the snap is installed: its install hook picks them up.
        stages.extend(["images", "microk8s"]);
        if first_control_plane {
            stages.extend(["addons", "helm"]);
        } else {
            stages.push("join");
        }
    }
    stages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_unit_names_follow_systemd_escape() {
        assert_eq!(mount_unit_name("/srv/shared"), "srv-shared.mount");
        assert_eq!(mount_unit_name("/mnt/nfs-home"), "mnt-nfs\\x2dhome.mount");
        assert_eq!(mount_unit_name("/"), "-.mount");
    }

    #[test]
    fn helm_merge_replaces_lists_and_merges_maps() {
        let mut base = json!({ "a": { "b": 1, "c": [1, 2] }, "d": 1 });
        merge_values(&mut base, &json!({ "a": { "c": [3] , "e": true } }));
        assert_eq!(
            base,
            json!({ "a": { "b": 1, "c": [3], "e": true }, "d": 1 })
        );
    }
}
