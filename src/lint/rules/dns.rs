//! DNS rules: one resolver configuration for every node, and dns addon upstreams that
//! MicroK8s accepts.
//!
//! The seed's admin found a node with its own DNS servers and search domains, which broke
//! ingress for FQDNs. MicroK8s' dns addon runs `ip route get` on each upstream and refuses
//! to enable when one has no route; without args it falls back to the host's resolv.conf
//! or 8.8.8.8, which an air-gapped node cannot reach.

use std::net::{IpAddr, Ipv4Addr};

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};
use crate::profile::source::Origin;

/// The rules of this module.
pub const RULES: &[Rule] = &[
    DNS_NODE_OVERRIDE,
    DNS_UPSTREAM_UNROUTABLE,
    DNS_UPSTREAM_PUBLIC,
];

/// A node whose `dns` differs from `[network.dns]`.
pub const DNS_NODE_OVERRIDE: Rule = Rule {
    id: "dns-node-override",
    severity: Severity::Error,
    title: "a node's DNS servers or search domains differ from [network.dns]",
    check: check_node_override,
};

/// A dns addon upstream with no route from the nodes.
pub const DNS_UPSTREAM_UNROUTABLE: Rule = Rule {
    id: "dns-upstream-unroutable",
    severity: Severity::Error,
    title: "a dns addon upstream has no route from the nodes (the addon's `ip route get` fails)",
    check: check_unroutable,
};

/// A public resolver as a dns addon upstream of an air-gapped cluster.
pub const DNS_UPSTREAM_PUBLIC: Rule = Rule {
    id: "dns-upstream-public",
    severity: Severity::Warning,
    title: "a dns addon upstream is a public resolver, out of reach of an air-gapped cluster",
    check: check_public,
};

/// Well-known public resolvers (Google, Cloudflare, Quad9, OpenDNS, Level3, AdGuard).
/// Only these are flagged: an air-gapped site may well number its own network in public
/// address space.
const PUBLIC_RESOLVERS: &[Ipv4Addr] = &[
    Ipv4Addr::new(8, 8, 8, 8),
    Ipv4Addr::new(8, 8, 4, 4),
    Ipv4Addr::new(1, 1, 1, 1),
    Ipv4Addr::new(1, 0, 0, 1),
    Ipv4Addr::new(9, 9, 9, 9),
    Ipv4Addr::new(149, 112, 112, 112),
    Ipv4Addr::new(208, 67, 222, 222),
    Ipv4Addr::new(208, 67, 220, 220),
    Ipv4Addr::new(4, 2, 2, 1),
    Ipv4Addr::new(4, 2, 2, 2),
    Ipv4Addr::new(94, 140, 14, 14),
    Ipv4Addr::new(94, 140, 15, 15),
];

/// A list the way TOML writes it: `["a", "b"]`.
fn quoted_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|item| format!("\"{}\"", item.to_string()))
        .collect();
    format!("[{}]", items.join(", "))
}

fn check_node_override(context: &Context<'_>) -> Vec<Finding> {
    let cluster_dns = &context.cluster.settings.network.dns;
    let mut findings = Vec::new();
    for node in &context.cluster.nodes {
        let Some(dns) = &node.settings.dns else {
            continue;
        };
        let servers_differ = dns.servers != cluster_dns.servers;
        let search_differs = dns.search != cluster_dns.search;
        let mut differences = Vec::new();
        if servers_differ {
            differences.push(format!(
                "servers {} instead of {}",
                quoted_list(&dns.servers),
                quoted_list(&cluster_dns.servers)
            ));
        }
        if search_differs {
            differences.push(format!(
                "search domains {} instead of {}",
                quoted_list(&dns.search),
                quoted_list(&cluster_dns.search)
            ));
        }
        if differences.is_empty() {
            continue;
        }
        let origin = if servers_differ {
            node.origin(&["dns", "servers"])
        } else {
            node.origin(&["dns", "search"])
        };
        findings.push(Finding::new(
            &DNS_NODE_OVERRIDE,
            origin,
            format!(
                "node `{}` has its own DNS: {}; names that resolve on the other nodes (ingress FQDNs) may not resolve here",
                node.name,
                differences.join(", ")
            ),
            format!(
                "remove `dns` from node `{}` so it gets [network.dns] (servers = {}, search = {}); if every node needs its settings, write them in [network.dns] instead",
                node.name,
                quoted_list(&cluster_dns.servers),
                quoted_list(&cluster_dns.search)
            ),
        ));
    }
    findings
}

/// One upstream the dns addon receives, with the profile value responsible.
struct Upstream {
    text: String,
    origin: Origin,
    /// True when it comes from the cluster's DNS servers (kiln's default args).
    derived: bool,
}

/// The dns addon's upstreams: its first argument split at commas, or (no args) the first
/// control plane's DNS servers, which kiln passes instead of letting MicroK8s fall back to
/// resolv.conf or 8.8.8.8 (see `render::context`).
fn upstreams(context: &Context<'_>) -> Vec<Upstream> {
    let cluster = context.cluster;
    let Some(microk8s) = &cluster.settings.microk8s else {
        return Vec::new();
    };
    let Some(addon) = microk8s.addons.get("dns").filter(|addon| addon.enabled) else {
        return Vec::new();
    };
    if let Some(first) = addon.args.first() {
        let origin = context.at(&["microk8s", "addons", "dns", "args", "0"]);
        return first
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| Upstream {
                text: entry.to_string(),
                origin: origin.clone(),
                derived: false,
            })
            .collect();
    }
    let Some(first) = cluster.first_control_plane() else {
        return Vec::new();
    };
    let (servers, own) = match &first.settings.dns {
        Some(dns) => (&dns.servers, true),
        None => (&cluster.settings.network.dns.servers, false),
    };
    servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            let index = index.to_string();
            let origin = if own {
                first.origin(&["dns", "servers", &index]).clone()
            } else {
                context.at(&["network", "dns", "servers", &index])
            };
            Upstream {
                text: server.to_string(),
                origin,
                derived: true,
            }
        })
        .collect()
}

/// An upstream's address: `IP` or `IP:PORT` (CoreDNS' forward syntax).
fn upstream_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

fn check_unroutable(context: &Context<'_>) -> Vec<Finding> {
    let network = &context.cluster.settings.network;
    let subnet = network.subnet;
    let has_kubernetes_nodes = context
        .cluster
        .nodes
        .iter()
        .any(|node| node.settings.kubernetes.is_some());
    if !has_kubernetes_nodes {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for upstream in upstreams(context) {
        let derived = upstream.derived;
        let source = |address: &dyn std::fmt::Display| {
            if derived {
                format!("the dns addon's upstream {address} (one of the DNS servers, which kiln passes when the addon has no args)")
            } else {
                format!("the dns addon's upstream {address}")
            }
        };
        let problem = match upstream_address(&upstream.text) {
            None => Some(format!(
                "{} is not an IP address: MicroK8s checks each upstream with `ip route get`",
                source(&format!("`{}`", upstream.text))
            )),
            Some(IpAddr::V4(address)) => {
                // Loopback routes exist on every host; anything else needs the subnet or a
                // default route.
                if address.is_loopback() || subnet.contains(address) || network.gateway.is_some() {
                    None
                } else {
                    Some(format!(
                        "{} lies outside the node subnet {subnet} and [network] has no gateway: `ip route get {address}` fails on every Kubernetes node and `microk8s enable dns` stops",
                        source(&address)
                    ))
                }
            }
            Some(IpAddr::V6(address)) => {
                if address.is_loopback() {
                    None
                } else {
                    Some(format!(
                        "{} is an IPv6 address, but kiln gives the nodes IPv4 only: `ip route get {address}` fails and `microk8s enable dns` stops",
                        source(&address)
                    ))
                }
            }
        };
        if let Some(message) = problem {
            let example = local_resolver(context);
            findings.push(Finding::new(
                &DNS_UPSTREAM_UNROUTABLE,
                &upstream.origin,
                message,
                format!(
                    "give the addon a resolver inside {subnet}, e.g. `[microk8s.addons.dns] args = [\"{example}\"]`, or set `gateway` in [network] if the nodes have a route out"
                ),
            ));
        }
    }
    findings
}

/// A resolver of the cluster inside the node subnet, for hints (else the subnet's address).
fn local_resolver(context: &Context<'_>) -> String {
    let network = &context.cluster.settings.network;
    network
        .dns
        .servers
        .iter()
        .find(|server| network.subnet.contains(**server))
        .map(ToString::to_string)
        .unwrap_or_else(|| network.subnet.network().to_string())
}

fn check_public(context: &Context<'_>) -> Vec<Finding> {
    if !context.cluster.settings.cluster.airgapped {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for upstream in upstreams(context) {
        let Some(IpAddr::V4(address)) = upstream_address(&upstream.text) else {
            continue;
        };
        if PUBLIC_RESOLVERS.contains(&address) {
            let hint = if upstream.derived {
                format!(
                    "replace {address} in the DNS servers with the site's own resolvers (the dns addon forwards to them when it has no args)"
                )
            } else {
                format!(
                    "forward to the site's own resolvers, e.g. `[microk8s.addons.dns] args = [\"{}\"]`, or drop the args: kiln then passes the [network.dns] servers",
                    local_resolver(context)
                )
            };
            findings.push(Finding::new(
                &DNS_UPSTREAM_PUBLIC,
                &upstream.origin,
                format!(
                    "the dns addon forwards to the public resolver {address}, but the cluster is air-gapped: names outside the cluster will not resolve"
                ),
                hint,
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses() {
        assert_eq!(
            upstream_address("10.1.24.2"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 24, 2)))
        );
        assert_eq!(
            upstream_address("10.1.24.2:53"),
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 24, 2)))
        );
        assert_eq!(upstream_address("dns.example"), None);
    }
}
