//! Join rules: what makes `microk8s join` from a launch configuration fail.
//!
//! kiln's own template writes a join URL with the first control plane's address and no
//! addons for workers; a profile's template override (`templates/microk8s/launch-config.yaml`)
//! can break either, so these rules read the rendered files. The token's length is checked
//! only when the secret is supplied, and never printed.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};
use crate::profile::model::KubernetesRole;
use crate::profile::source::{Origin, SourceFile};
use crate::profile::ValidNode;

/// The rules of this module.
pub const RULES: &[Rule] = &[JOIN_TOKEN_SHORT, JOIN_ADDRESS_NOT_IP, JOIN_WORKER_ADDONS];

/// A persistent cluster token shorter than MicroK8s accepts.
pub const JOIN_TOKEN_SHORT: Rule = Rule {
    id: "join-token-short",
    severity: Severity::Error,
    title: "the MicroK8s join token is shorter than the 32 characters MicroK8s requires",
    check: check_token,
};

/// A join URL whose host is a name.
pub const JOIN_ADDRESS_NOT_IP: Rule = Rule {
    id: "join-address-not-ip",
    severity: Severity::Error,
    title: "a launch configuration's join URL does not start with an IP address",
    check: check_join_address,
};

/// A worker's launch configuration with addons.
pub const JOIN_WORKER_ADDONS: Rule = Rule {
    id: "join-worker-addons",
    severity: Severity::Error,
    title: "a worker's launch configuration enables addons, which MicroK8s refuses after a join",
    check: check_worker_addons,
};

/// Shortest token `microk8s add-node --token` and persistent tokens accept.
const MIN_TOKEN_LENGTH: usize = 32;

/// Where the launch configuration is rendered, and the template that writes it.
const LAUNCH_CONFIG: &str = "root/etc/microk8s.yaml";
const LAUNCH_TEMPLATE: &str = "templates/microk8s/launch-config.yaml";

fn check_token(context: &Context<'_>) -> Vec<Finding> {
    let Some(microk8s) = &context.cluster.settings.microk8s else {
        return Vec::new();
    };
    let name = &microk8s.token.name;
    let Some(token) = context.secrets.get(name) else {
        return Vec::new();
    };
    let length = token.chars().count();
    if length >= MIN_TOKEN_LENGTH {
        return Vec::new();
    }
    vec![Finding::new(
        &JOIN_TOKEN_SHORT,
        &context.at(&["microk8s", "token"]),
        format!(
            "the MicroK8s join token (secret `{name}`) has {length} characters; MicroK8s requires at least {MIN_TOKEN_LENGTH}, so the persistent token is refused and no node can join"
        ),
        format!(
            "supply secret `{name}` with at least {MIN_TOKEN_LENGTH} characters, e.g. the output of `openssl rand -hex 16`"
        ),
    )]
}

/// The launch configuration documents of one node's rendered files (a document that does
/// not parse is skipped: the validators report it).
fn launch_documents(context: &Context<'_>, node: &str) -> Vec<serde_yaml::Value> {
    let Some(file) = context
        .rendered
        .nodes
        .get(node)
        .and_then(|tree| tree.files.get(LAUNCH_CONFIG))
    else {
        return Vec::new();
    };
    serde_yaml::Deserializer::from_slice(&file.contents)
        .filter_map(|document| serde_yaml::Value::deserialize(document).ok())
        .collect()
}

/// The profile's override of the launch configuration template, pointing at the first line
/// that contains `needle` (else its first line); `None` when kiln's own template is used.
fn template_origin(context: &Context<'_>, needle: &str) -> Option<Origin> {
    let path = context.cluster.profile_dir.join(LAUNCH_TEMPLATE);
    let text = fs_err::read_to_string(&path).ok()?;
    let start = text
        .find(needle)
        .map(|offset| text[..offset].rfind('\n').map_or(0, |newline| newline + 1))
        .unwrap_or(0);
    let line_end = text[start..]
        .find('\n')
        .map_or(text.len(), |end| start + end);
    // Point past the indentation, at the key itself.
    let key_start =
        start + (text[start..line_end].len() - text[start..line_end].trim_start().len());
    let file: Arc<SourceFile> = SourceFile::new(&path, text);
    Some(Origin::file(&file, key_start..line_end))
}

/// The host of a join URL `HOST:PORT/TOKEN[/FINGERPRINT]`, with IPv6 brackets removed.
fn join_host(url: &str) -> &str {
    let endpoint = url.split('/').next().unwrap_or(url);
    let host = match endpoint.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match endpoint.rsplit_once(':') {
            // A bare IPv6 address has several colons and no port to strip.
            Some((host, port))
                if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host
            }
            _ => endpoint,
        },
    };
    host.trim()
}

fn role_name(node: &ValidNode) -> &'static str {
    match node.settings.kubernetes {
        Some(KubernetesRole::ControlPlane) => "control plane",
        Some(KubernetesRole::Worker) => "worker",
        None => "node",
    }
}

fn check_join_address(context: &Context<'_>) -> Vec<Finding> {
    let first = context.cluster.first_control_plane();
    let mut findings = Vec::new();
    for node in &context.cluster.nodes {
        for document in launch_documents(context, &node.name) {
            let Some(url) = document
                .get("join")
                .and_then(|join| join.get("url"))
                .and_then(serde_yaml::Value::as_str)
            else {
                continue;
            };
            let host = join_host(url);
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            let origin = template_origin(context, "url:")
                .or_else(|| first.map(|first| first.origin(&["ip"]).clone()))
                .unwrap_or_else(|| node.origin(&["kubernetes"]).clone());
            let address = first
                .map(|first| first.settings.ip.to_string())
                .unwrap_or_else(|| "the first control plane's address".to_string());
            // Only the host is shown: the rest of the URL is the join token.
            findings.push(Finding::new(
                &JOIN_ADDRESS_NOT_IP,
                &origin,
                format!(
                    "the launch configuration of {} `{}` joins through `{host}`, which is not an IP address: `microk8s join` needs `IP:25000/TOKEN`, so the node never joins",
                    role_name(node),
                    node.name
                ),
                format!(
                    "write the join URL with the first control plane's address, as kiln's template does: `url: {{{{ microk8s.join_url | yaml }}}}` (here {address}:25000/...)"
                ),
            ));
        }
    }
    findings
}

fn check_worker_addons(context: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for node in &context.cluster.nodes {
        if node.settings.kubernetes != Some(KubernetesRole::Worker) {
            continue;
        }
        let with_addons = launch_documents(context, &node.name)
            .iter()
            .any(|document| document.get("addons").is_some());
        if !with_addons {
            continue;
        }
        let origin = template_origin(context, "addons:")
            .unwrap_or_else(|| node.origin(&["kubernetes"]).clone());
        findings.push(Finding::new(
            &JOIN_WORKER_ADDONS,
            &origin,
            format!(
                "the launch configuration of worker `{}` has `addons`: after the join MicroK8s refuses `microk8s enable` on a worker, so applying the configuration fails and is retried forever",
                node.name
            ),
            "write `addons` only for the first control plane (kiln's template wraps them in `{% if node.first_control_plane %}`); addons enabled there apply to the whole cluster",
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_hosts() {
        assert_eq!(join_host("10.1.24.201:25000/abc"), "10.1.24.201");
        assert_eq!(
            join_host("sai-cp1.sai.cttc.es:25000/abc/def"),
            "sai-cp1.sai.cttc.es"
        );
        assert_eq!(join_host("[fd00::1]:25000/abc"), "fd00::1");
        assert_eq!(join_host("sai-cp1/abc"), "sai-cp1");
    }
}
