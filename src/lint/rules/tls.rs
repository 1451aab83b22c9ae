//! TLS: Let's Encrypt where its challenge cannot reach the cluster, a jupyterhub-ssh hub URL
//! whose certificate cannot verify, and settings that turn certificate verification off.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::rules::jupyterhub::{get, get_str, hubs, is_false, is_true};
use crate::lint::{Context, Finding, Rule};
use crate::profile::value::{Node, Value as TreeValue};

/// The rules of this module.
pub const RULES: &[Rule] = &[LETSENCRYPT_UNREACHABLE, SSH_HUB_URL, VERIFICATION_OFF];

/// Let's Encrypt's HTTP-01 challenge needs port 80 from the internet.
pub const LETSENCRYPT_UNREACHABLE: Rule = Rule {
    id: "tls-letsencrypt-unreachable",
    severity: Severity::Error,
    title: "Let's Encrypt certificates on a cluster the ACME challenge cannot reach",
    check: check_letsencrypt,
};

/// jupyterhub-ssh cannot verify the hub's certificate at its hubUrl.
pub const SSH_HUB_URL: Rule = Rule {
    id: "jupyterhub-ssh-hub-url-unverifiable",
    severity: Severity::Error,
    title: "jupyterhub-ssh's hubUrl does not match the hub's certificate",
    check: check_ssh_hub_url,
};

/// A value that turns certificate verification off.
pub const VERIFICATION_OFF: Rule = Rule {
    id: "tls-verification-off",
    severity: Severity::Error,
    title: "A setting turns TLS certificate verification off",
    check: check_verification_off,
};

/// How a hub's proxy does TLS: `Some(type)` when `proxy.https.enabled` (the type defaults to
/// `letsencrypt`, as in the chart).
fn https_type(values: &Value) -> Option<String> {
    let enabled = get(values, &["proxy", "https", "enabled"]).is_some_and(is_true);
    enabled.then(|| {
        get_str(values, &["proxy", "https", "type"])
            .unwrap_or("letsencrypt")
            .to_string()
    })
}

/// `proxy.https.hosts` of a hub.
fn https_hosts(values: &Value) -> Vec<String> {
    get(values, &["proxy", "https", "hosts"])
        .and_then(Value::as_array)
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(Value::as_str)
                .map(|host| host.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

fn check_letsencrypt(context: &Context<'_>) -> Vec<Finding> {
    let settings = &context.cluster.settings;
    let airgapped = settings.cluster.airgapped;
    let internet_http = settings.network.internet_http;
    if !airgapped && internet_http {
        return Vec::new();
    }
    let why = if airgapped {
        "the cluster is air-gapped (cluster.airgapped)"
    } else {
        "port 80 is not reachable from the internet (network.internet_http is false)"
    };
    let mut findings = Vec::new();
    for (release, values) in hubs(context) {
        let explicit = get_str(&values, &["proxy", "https", "type"]);
        let enabled = get(&values, &["proxy", "https", "enabled"]).is_some_and(is_true);
        let hosts = !https_hosts(&values).is_empty();
        let (uses, origin) = match explicit {
            Some(kind) if kind.trim() == "letsencrypt" => (
                "proxy.https.type = \"letsencrypt\"".to_string(),
                context.at_value(release, &["proxy", "https", "type"]),
            ),
            None if enabled && hosts => (
                "proxy.https is enabled with hosts and no type, and the chart's default type \
                 is letsencrypt"
                    .to_string(),
                context.at_value(release, &["proxy", "https", "enabled"]),
            ),
            _ => continue,
        };
        findings.push(Finding::new(
            &LETSENCRYPT_UNREACHABLE,
            &origin,
            format!(
                "release `{release}`: {uses}, but {why}: Let's Encrypt's HTTP-01 challenge \
                 cannot reach the hub, so it never gets a certificate"
            ),
            format!(
                "use a certificate you provide: `type = \"secret\"` and `secret = {{ name = \
                 \"NAME\" }}` under [helm.releases.{release}.values.proxy.https], with a \
                 kubernetes.io/tls Secret in [kubernetes.secrets.NAME]; set \
                 `network.internet_http = true` (and `cluster.airgapped = false`) only if port \
                 80 is open from the internet"
            ),
        ));
    }
    findings
}

/// `(scheme, host)` of a URL, the host lower-cased and without brackets or port.
fn scheme_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether a host is a Kubernetes Service name rather than a public DNS name.
fn in_cluster(host: &str) -> bool {
    !host.contains('.')
        || host.starts_with("proxy-public")
        || host.ends_with(".svc")
        || host.ends_with(".cluster.local")
}

fn check_ssh_hub_url(context: &Context<'_>) -> Vec<Finding> {
    let hubs = hubs(context);
    let releases = &context.cluster.settings.helm.releases;
    let mut findings = Vec::new();
    for ssh in context.releases_of_chart("jupyterhub-ssh") {
        let Some(values) = context.release_values(ssh) else {
            continue;
        };
        let Some(url) = get_str(&values, &["hubUrl"]) else {
            continue;
        };
        let Some((scheme, host)) = scheme_host(url) else {
            continue;
        };
        // The hub in the same namespace, else the first one.
        let namespace = &releases[ssh].namespace;
        let Some((hub, hub_values)) = hubs
            .iter()
            .find(|(hub, _)| &releases[*hub].namespace == namespace)
            .or_else(|| hubs.first())
        else {
            continue;
        };
        let hosts = https_hosts(hub_values);
        let https = https_type(hub_values);
        let public = hosts
            .first()
            .map(|host| format!("https://{host}"))
            .unwrap_or_else(|| "https://HOST".to_string());
        let fix = format!(
            "set `hubUrl = \"{public}\"` (a name in release `{hub}`'s proxy.https.hosts, which \
             its certificate is issued for); jupyterhub-ssh has no option to trust another CA \
             or skip verification, and must not be rebuilt to skip it"
        );
        let problem = if scheme == "https" {
            if host.parse::<IpAddr>().is_ok() {
                Some(format!(
                    "names the IP address {host}: the hub's certificate is issued for a host \
                     name, so it cannot match"
                ))
            } else if in_cluster(&host) {
                Some(format!(
                    "names the in-cluster service `{host}`: no certificate the hub serves is \
                     issued for that name"
                ))
            } else if !hosts.is_empty() && !hosts.contains(&host) {
                Some(format!(
                    "names {host}, which is not in release `{hub}`'s proxy.https.hosts ({}): \
                     the hub's certificate cannot match it",
                    hosts.join(", ")
                ))
            } else {
                None
            }
        } else if scheme == "http"
            && host.starts_with("proxy-public")
            && https
                .as_deref()
                .is_some_and(|kind| matches!(kind, "secret" | "manual" | "letsencrypt"))
        {
            Some(format!(
                "is plain HTTP to proxy-public, but release `{hub}`'s proxy serves HTTPS \
                 (proxy.https.type {}), where port 80 only redirects to https",
                https.as_deref().unwrap_or_default()
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            findings.push(Finding::new(
                &SSH_HUB_URL,
                &context.at_value(ssh, &["hubUrl"]),
                format!(
                    "release `{ssh}`: hubUrl `{url}` {problem}; every ssh login fails with \
                     `certificate verify failed`"
                ),
                fix,
            ));
        }
    }
    findings
}

/// Keys (lower-cased, without `_` and `-`) that turn verification off when true.
const OFF_WHEN_TRUE: &[&str] = &[
    "skipverify",
    "insecure",
    "insecureskipverify",
    "insecureskiptlsverify",
    "tlsskipverify",
    "skiptlsverify",
    "skipsslverify",
    "sslskipverify",
    "tlsinsecure",
    "insecuretls",
    "disablesslverification",
    "disabletlsverification",
];

/// Keys (normalized the same way) that turn verification off when false.
const OFF_WHEN_FALSE: &[&str] = &[
    "verify",
    "tlsverify",
    "sslverify",
    "verifyssl",
    "verifytls",
    "validatecert",
    "validatecerts",
    "validateservercert",
    "verifycert",
    "verifycerts",
    "verifycertificate",
    "tlsverification",
    "sslverification",
];

/// Code fragments (lower-cased, without spaces) that turn verification off in configuration
/// written as text (hub.extraConfig, scripts).
const OFF_IN_TEXT: &[&str] = &[
    "verify=false",
    "validate_cert=false",
    "validate_server_cert=false",
    "verify_ssl=false",
    "ssl_verify=false",
    "tls_verify=false",
    "insecure_skip_verify=true",
    "pythonhttpsverify=0",
    "_create_unverified_context",
    "cert_reqs=ssl.cert_none",
    "node_tls_reject_unauthorized=0",
];

/// Whether an environment variable `name = value` turns verification off.
fn env_off(name: &str, value: &Value) -> bool {
    let text = match value {
        Value::String(text) => text.trim().to_string(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        _ => return false,
    };
    match name {
        "PYTHONHTTPSVERIFY" | "NODE_TLS_REJECT_UNAUTHORIZED" => text == "0",
        "CURL_CA_BUNDLE" | "REQUESTS_CA_BUNDLE" => text.is_empty(),
        "GIT_SSL_NO_VERIFY" => is_true(value) || (!text.is_empty() && !is_false(value)),
        _ => false,
    }
}

fn normalized(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Walk a profile value tree, reporting each setting that turns verification off as
/// (dotted path, node, what it does).
fn walk<'a>(node: &'a Node, path: &mut Vec<String>, out: &mut Vec<(String, &'a Node, String)>) {
    match &node.value {
        TreeValue::Table(table) => {
            // `{ name = "PYTHONHTTPSVERIFY", value = "0" }`: an env list entry.
            if let (Some(name), Some(entry)) = (
                table.get("name").and_then(|entry| entry.node.as_str()),
                table.get("value"),
            ) {
                if env_off(name, &entry.node.to_json()) {
                    let mut shown = path.clone();
                    shown.push("value".to_string());
                    out.push((
                        shown.join("."),
                        &entry.node,
                        format!(
                            "sets the environment variable {name}={}",
                            entry.node.summary()
                        ),
                    ));
                }
            }
            for (key, entry) in table {
                path.push(key.clone());
                let value = entry.node.to_json();
                let scalar = !matches!(entry.node.value, TreeValue::Table(_) | TreeValue::Array(_));
                let key_normalized = normalized(key);
                let flag = (OFF_WHEN_TRUE.contains(&key_normalized.as_str()) && is_true(&value))
                    || (OFF_WHEN_FALSE.contains(&key_normalized.as_str()) && is_false(&value));
                let what = if scalar && flag {
                    Some(format!("sets {key} = {}", entry.node.summary()))
                } else if scalar && env_off(key, &value) {
                    Some(format!(
                        "sets the environment variable {key}={}",
                        entry.node.summary()
                    ))
                } else {
                    None
                };
                match what {
                    Some(what) => out.push((path.join("."), &entry.node, what)),
                    None => walk(&entry.node, path, out),
                }
                path.pop();
            }
        }
        TreeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                walk(item, path, out);
                path.pop();
            }
        }
        TreeValue::String(text) => {
            let compact: String = text
                .chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect();
            if let Some(fragment) = OFF_IN_TEXT
                .iter()
                .find(|fragment| compact.contains(**fragment))
            {
                out.push((
                    path.join("."),
                    node,
                    format!("holds code with `{fragment}`"),
                ));
            }
        }
        _ => {}
    }
}

fn check_verification_off(context: &Context<'_>) -> Vec<Finding> {
    let tree = &context.cluster.cluster_tree;
    let mut found = Vec::new();
    for root in [&["helm", "releases"][..], &["registries"][..]] {
        if let Some(node) = tree.lookup(root) {
            let mut path: Vec<String> = root.iter().map(|key| key.to_string()).collect();
            walk(node, &mut path, &mut found);
        }
    }
    let mut findings: Vec<Finding> = found
        .into_iter()
        .map(|(path, node, what)| {
            Finding::new(
                &VERIFICATION_OFF,
                &node.origin,
                format!(
                    "`{path}` {what}: TLS certificate verification is off, so any machine on \
                     the path can impersonate the server"
                ),
                "remove it and make the client trust the CA that signed the server's \
                 certificate instead (a registry mirror's `ca = \"/path/ca.pem\"`; for an \
                 application, the site CA in its image's trust store or in SSL_CERT_FILE / \
                 REQUESTS_CA_BUNDLE pointing at a mounted CA file)",
            )
        })
        .collect();

    // Registry mirrors as rendered (a profile's own hosts.toml template could skip
    // verification).
    let mut registries = BTreeSet::new();
    for tree in context.rendered.nodes.values() {
        for (path, file) in &tree.files {
            let Some(registry) = path
                .strip_suffix("/hosts.toml")
                .and_then(|rest| rest.rsplit('/').next())
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&file.contents);
            let skips = text.lines().any(|line| {
                let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
                compact.starts_with("skip_verify=true")
            });
            if skips {
                registries.insert(registry.to_string());
            }
        }
    }
    for registry in registries {
        findings.push(Finding::new(
            &VERIFICATION_OFF,
            &context.at(&["registries", "mirrors", &registry]),
            format!(
                "the containerd hosts.toml rendered for registry mirror `{registry}` sets \
                 skip_verify = true: nodes pull images without verifying the mirror's \
                 certificate"
            ),
            format!(
                "remove skip_verify from the hosts.toml template and give the mirror's CA: \
                 `ca = \"/path/ca.pem\"` under [registries.mirrors.\"{registry}\"]"
            ),
        ));
    }
    findings
}
