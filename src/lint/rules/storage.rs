//! Storage rules: user data must live on the network, not on the node it was created on.
//!
//! The seed's admin found JupyterHub unable to start a user's server on a newly added node:
//! the user's volume was a hostpath volume on another machine. MicroK8s' hostpath-storage
//! makes itself the default class unless told otherwise; NFS provisioners need an export
//! that lets root chown the directories they create.

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};

/// The rules of this module.
pub const RULES: &[Rule] = &[
    HOSTPATH_DEFAULT_MULTINODE,
    JUPYTERHUB_STORAGE_NOT_NETWORK,
    JUPYTERHUB_STORAGE_CLASS_UNKNOWN,
    NFS_ROOT_SQUASH,
];

/// hostpath-storage as the default class of a multi-node cluster.
pub const HOSTPATH_DEFAULT_MULTINODE: Rule = Rule {
    id: "hostpath-default-multinode",
    severity: Severity::Error,
    title: "hostpath-storage is the default storage class of a multi-node cluster",
    check: check_hostpath_default,
};

/// JupyterHub user volumes on hostpath.
pub const JUPYTERHUB_STORAGE_NOT_NETWORK: Rule = Rule {
    id: "jupyterhub-storage-not-network",
    severity: Severity::Error,
    title: "JupyterHub user volumes use hostpath storage: a user's data stays on one node",
    check: check_hub_storage,
};

/// JupyterHub user volumes on a class no NFS provisioner release creates.
pub const JUPYTERHUB_STORAGE_CLASS_UNKNOWN: Rule = Rule {
    id: "jupyterhub-storage-class-unknown",
    severity: Severity::Warning,
    title: "JupyterHub user volumes use a storage class that no NFS provisioner release creates",
    check: check_hub_storage_class,
};

/// An NFS export that squashes root.
pub const NFS_ROOT_SQUASH: Rule = Rule {
    id: "nfs-root-squash",
    severity: Severity::Error,
    title: "the NFS export squashes root: provisioners cannot chown the volumes they create",
    check: check_root_squash,
};

/// MicroK8s' hostpath storage class.
const HOSTPATH_CLASS: &str = "microk8s-hostpath";

/// The value at `path` below `value`.
fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A boolean the way Helm's templates and Python's click read it.
fn truth(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "t" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "f" | "off" => Some(false),
        _ => None,
    }
}

fn value_truth(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => truth(text),
        _ => None,
    }
}

/// The hostpath-storage addon's args, when it is enabled.
fn hostpath_args<'a>(context: &'a Context<'_>) -> Option<&'a [String]> {
    let microk8s = context.cluster.settings.microk8s.as_ref()?;
    let addon = microk8s
        .addons
        .get("hostpath-storage")
        .filter(|addon| addon.enabled)?;
    Some(&addon.args)
}

/// What `--default-class` the hostpath addon gets (`--default-class=V` or
/// `--default-class V`); its default is true.
fn hostpath_is_default(args: &[String]) -> bool {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let arg = arg.trim();
        if let Some(value) = arg.strip_prefix("--default-class=") {
            return truth(value).unwrap_or(true);
        }
        if let Some(value) = arg.strip_prefix("--default-class ") {
            return truth(value).unwrap_or(true);
        }
        if arg == "--default-class" {
            return iter.next().and_then(|value| truth(value)).unwrap_or(true);
        }
    }
    true
}

fn kubernetes_node_count(context: &Context<'_>) -> usize {
    context
        .cluster
        .nodes
        .iter()
        .filter(|node| node.settings.kubernetes.is_some())
        .count()
}

fn check_hostpath_default(context: &Context<'_>) -> Vec<Finding> {
    let Some(args) = hostpath_args(context) else {
        return Vec::new();
    };
    let nodes = kubernetes_node_count(context);
    if nodes < 2 || !hostpath_is_default(args) {
        return Vec::new();
    }
    let origin = if args.is_empty() {
        context.at(&["microk8s", "addons", "hostpath-storage"])
    } else {
        context.at(&["microk8s", "addons", "hostpath-storage", "args"])
    };
    let shown = if args.is_empty() {
        "no args".to_string()
    } else {
        format!("args {args:?}")
    };
    vec![Finding::new(
        &HOSTPATH_DEFAULT_MULTINODE,
        &origin,
        format!(
            "hostpath-storage ({shown}) makes `{HOSTPATH_CLASS}` the default storage class on a cluster of {nodes} Kubernetes nodes: a volume without a class stays on the node it was created on, and its pod cannot move to another node"
        ),
        "write `args = [\"--default-class=false\"]` under [microk8s.addons.hostpath-storage] and make an NFS provisioner's class the default (nfs-subdir-external-provisioner does by default)",
    )]
}

/// A storage class an NFS provisioner release creates, and whether it is the default.
struct NetworkClass {
    name: String,
    default: bool,
}

/// Classes created by the cluster's NFS provisioner releases.
fn network_classes(context: &Context<'_>) -> Vec<NetworkClass> {
    let mut classes = Vec::new();
    for (chart, default_name, create_default) in [
        ("nfs-subdir-external-provisioner", Some("nfs-client"), true),
        ("csi-driver-nfs", None, false),
    ] {
        for release in context.releases_of_chart(chart) {
            let values = context.release_values(release).unwrap_or(Value::Null);
            let create = get(&values, &["storageClass", "create"])
                .and_then(value_truth)
                .unwrap_or(create_default);
            if !create {
                continue;
            }
            let name = get(&values, &["storageClass", "name"])
                .and_then(Value::as_str)
                .or(default_name);
            let Some(name) = name else {
                continue;
            };
            let annotation = get(
                &values,
                &[
                    "storageClass",
                    "annotations",
                    "storageclass.kubernetes.io/is-default-class",
                ],
            );
            let default = get(&values, &["storageClass", "defaultClass"])
                .or(annotation)
                .and_then(value_truth)
                .unwrap_or(false);
            classes.push(NetworkClass {
                name: name.to_string(),
                default,
            });
        }
    }
    classes
}

/// A hub's user storage: `None` when it makes no volumes (`type` other than `dynamic`),
/// else the class it names (`None` inside: the cluster's default class).
fn hub_storage_class(values: &Value) -> Option<Option<String>> {
    let kind = get(values, &["singleuser", "storage", "type"])
        .and_then(Value::as_str)
        .unwrap_or("dynamic");
    if kind != "dynamic" {
        return None;
    }
    let class = get(
        values,
        &["singleuser", "storage", "dynamic", "storageClass"],
    )
    .and_then(Value::as_str)
    .map(str::trim)
    .filter(|class| !class.is_empty())
    .map(String::from);
    Some(class)
}

const CLASS_PATH: &[&str] = &["singleuser", "storage", "dynamic", "storageClass"];

fn check_hub_storage(context: &Context<'_>) -> Vec<Finding> {
    let classes = network_classes(context);
    let example = classes
        .first()
        .map(|class| class.name.clone())
        .unwrap_or_else(|| "nfs-client".to_string());
    let mut findings = Vec::new();
    for release in context.releases_of_chart("jupyterhub") {
        let Some(values) = context.release_values(release) else {
            continue;
        };
        let Some(class) = hub_storage_class(&values) else {
            continue;
        };
        let origin = context.at_value(release, CLASS_PATH);
        let mut hint = format!(
            "set `storageClass = \"{example}\"` under [helm.releases.{release}.values.singleuser.storage.dynamic] (a class of an NFS provisioner release such as nfs-subdir-external-provisioner)"
        );
        if class.is_none() {
            hint.push_str(", or make the provisioner's class the default (`storageClass.defaultClass = true`)");
        }
        let message = match class.as_deref() {
            Some(HOSTPATH_CLASS) => format!(
                "JupyterHub release `{release}` puts user volumes on `{HOSTPATH_CLASS}`: each user's data stays on the node of their first server, which then cannot start on another node"
            ),
            Some(_) => continue,
            None => {
                if classes.iter().any(|class| class.default) {
                    continue;
                }
                let default = match hostpath_args(context) {
                    Some(args) if hostpath_is_default(args) => {
                        format!("the default class is hostpath-storage's `{HOSTPATH_CLASS}`")
                    }
                    _ => "no network storage class is the default".to_string(),
                };
                format!(
                    "JupyterHub release `{release}` names no storageClass for user volumes, so they get the cluster's default class, and {default}: a user's data does not follow them to another node"
                )
            }
        };
        findings.push(Finding::new(
            &JUPYTERHUB_STORAGE_NOT_NETWORK,
            &origin,
            message,
            hint,
        ));
    }
    findings
}

fn check_hub_storage_class(context: &Context<'_>) -> Vec<Finding> {
    let classes = network_classes(context);
    let mut findings = Vec::new();
    for release in context.releases_of_chart("jupyterhub") {
        let Some(values) = context.release_values(release) else {
            continue;
        };
        let Some(Some(class)) = hub_storage_class(&values) else {
            continue;
        };
        if class == HOSTPATH_CLASS || classes.iter().any(|known| known.name == class) {
            continue;
        }
        let known: Vec<String> = classes
            .iter()
            .map(|class| format!("`{}`", class.name))
            .collect();
        let (known_text, hint) = if known.is_empty() {
            (
                "the cluster has no NFS provisioner release".to_string(),
                "add an NFS provisioner release (chart `nfs-subdir-external-provisioner`, class `nfs-client`) and use its class, or make sure something else creates this class".to_string(),
            )
        } else {
            (
                format!("NFS provisioner releases create {}", known.join(", ")),
                format!(
                    "write `storageClass = \"{}\"`, or set the provisioner's `storageClass.name` to `{class}`",
                    classes[0].name
                ),
            )
        };
        findings.push(Finding::new(
            &JUPYTERHUB_STORAGE_CLASS_UNKNOWN,
            &context.at_value(release, CLASS_PATH),
            format!(
                "JupyterHub release `{release}` puts user volumes on storage class `{class}`, but {known_text}: unless something else creates it, user volumes stay Pending"
            ),
            hint,
        ));
    }
    findings
}

fn check_root_squash(context: &Context<'_>) -> Vec<Finding> {
    let Some(nfs) = &context.cluster.settings.nfs else {
        return Vec::new();
    };
    let options: Vec<&str> = nfs.options.iter().map(|option| option.trim()).collect();
    let squashing: Vec<&str> = options
        .iter()
        .copied()
        .filter(|option| *option == "root_squash" || *option == "all_squash")
        .collect();
    let no_root_squash = options.contains(&"no_root_squash");
    if no_root_squash && squashing.is_empty() {
        return Vec::new();
    }
    let problem = if squashing.is_empty() {
        "lack `no_root_squash`, so root is squashed (the exports(5) default)".to_string()
    } else {
        format!("say {}", squashing.join(" and "))
    };
    let mut fixed: Vec<String> = options
        .iter()
        .filter(|option| !matches!(**option, "root_squash" | "all_squash" | "no_root_squash"))
        .map(|option| format!("\"{option}\""))
        .collect();
    fixed.push("\"no_root_squash\"".to_string());
    vec![Finding::new(
        &NFS_ROOT_SQUASH,
        &context.at(&["nfs", "options"]),
        format!(
            "the NFS export's options [{}] {problem}: NFS provisioners create and chown each volume's directory as root, which then fails and user volumes stay unusable",
            options.join(", ")
        ),
        format!("write `options = [{}]` in [nfs]", fixed.join(", ")),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn default_class_args() {
        assert!(hostpath_is_default(&args(&[])));
        assert!(!hostpath_is_default(&args(&["--default-class=false"])));
        assert!(!hostpath_is_default(&args(&["--default-class", "false"])));
        assert!(!hostpath_is_default(&args(&["--default-class false"])));
        assert!(!hostpath_is_default(&args(&[
            "--reclaim-policy",
            "Retain",
            "--default-class=False"
        ])));
        assert!(hostpath_is_default(&args(&["--default-class=true"])));
        assert!(hostpath_is_default(&args(&["--reclaim-policy=Retain"])));
    }
}
