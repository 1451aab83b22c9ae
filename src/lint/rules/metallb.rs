//! MetalLB rules: the addon's address range, which MicroK8s takes as one comma-separated
//! argument of `a.b.c.d-e.f.g.h` ranges or CIDRs (and prompts for when it is missing).

use std::net::Ipv4Addr;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};
use crate::profile::model::Cidr;
use crate::profile::source::Origin;

/// The rules of this module.
pub const RULES: &[Rule] = &[
    METALLB_NO_RANGE,
    METALLB_RANGE_INVALID,
    METALLB_RANGE_OUTSIDE_SUBNET,
    METALLB_RANGE_OVERLAPS_NODES,
];

/// The addon without args prompts for a range.
pub const METALLB_NO_RANGE: Rule = Rule {
    id: "metallb-no-range",
    severity: Severity::Error,
    title: "the metallb addon has no address range: it prompts and hangs an unattended install",
    check: check_no_range,
};

/// An entry that is neither a range nor a CIDR.
pub const METALLB_RANGE_INVALID: Rule = Rule {
    id: "metallb-range-invalid",
    severity: Severity::Error,
    title: "a metallb address range is neither `a.b.c.d-e.f.g.h` nor a CIDR",
    check: check_invalid,
};

/// A range reaching outside the node subnet.
pub const METALLB_RANGE_OUTSIDE_SUBNET: Rule = Rule {
    id: "metallb-range-outside-subnet",
    severity: Severity::Error,
    title: "a metallb address range reaches outside the node subnet",
    check: check_outside_subnet,
};

/// A range holding a node's address or the gateway.
pub const METALLB_RANGE_OVERLAPS_NODES: Rule = Rule {
    id: "metallb-range-overlaps-nodes",
    severity: Severity::Error,
    title: "a metallb address range holds a node's address or the gateway",
    check: check_overlaps,
};

/// One entry of the addon's range list.
struct Entry {
    text: String,
    origin: Origin,
    /// First and last address, or `None` if the entry does not parse.
    range: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Parse `a.b.c.d-e.f.g.h` (start not after end) or `a.b.c.d/n`.
fn parse_range(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if let Some((start, end)) = text.split_once('-') {
        let start: Ipv4Addr = start.trim().parse().ok()?;
        let end: Ipv4Addr = end.trim().parse().ok()?;
        return (start <= end).then_some((start, end));
    }
    if text.contains('/') {
        let cidr: Cidr = text.parse().ok()?;
        return Some((cidr.network(), cidr.broadcast()));
    }
    None
}

/// The enabled addon's args, or `None` when the addon is not enabled.
fn metallb_args<'a>(context: &'a Context<'_>) -> Option<&'a [String]> {
    let microk8s = context.cluster.settings.microk8s.as_ref()?;
    let addon = microk8s
        .addons
        .get("metallb")
        .filter(|addon| addon.enabled)?;
    Some(&addon.args)
}

/// Every entry of every arg, split at commas.
fn entries(context: &Context<'_>) -> Vec<Entry> {
    let Some(args) = metallb_args(context) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for (index, arg) in args.iter().enumerate() {
        let origin = context.at(&["microk8s", "addons", "metallb", "args", &index.to_string()]);
        for text in arg
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
        {
            entries.push(Entry {
                text: text.to_string(),
                origin: origin.clone(),
                range: parse_range(text),
            });
        }
    }
    entries
}

fn check_no_range(context: &Context<'_>) -> Vec<Finding> {
    let Some(args) = metallb_args(context) else {
        return Vec::new();
    };
    if args.iter().any(|arg| !arg.trim().is_empty()) {
        return Vec::new();
    }
    let subnet = context.cluster.settings.network.subnet;
    vec![Finding::new(
        &METALLB_NO_RANGE,
        &context.at(&["microk8s", "addons", "metallb"]),
        "the metallb addon has no address range: `microk8s enable metallb` then asks for one on the terminal and the unattended first boot hangs",
        format!(
            "write `args = [\"FIRST-LAST\"]` under [microk8s.addons.metallb] with free addresses of {subnet} that no node or DHCP uses"
        ),
    )]
}

fn check_invalid(context: &Context<'_>) -> Vec<Finding> {
    entries(context)
        .into_iter()
        .filter(|entry| entry.range.is_none())
        .map(|entry| {
            Finding::new(
                &METALLB_RANGE_INVALID,
                &entry.origin,
                format!(
                    "metallb address range `{}` is neither `FIRST-LAST` (IPv4, first not after last) nor a CIDR: the addon rejects it",
                    entry.text
                ),
                "write one comma-separated list such as `args = [\"10.1.24.220-10.1.24.239\"]` or `args = [\"10.1.24.224/28\"]`",
            )
        })
        .collect()
}

fn check_outside_subnet(context: &Context<'_>) -> Vec<Finding> {
    let subnet = context.cluster.settings.network.subnet;
    let mut findings = Vec::new();
    for entry in entries(context) {
        let Some((start, end)) = entry.range else {
            continue;
        };
        let outside: Vec<String> = [start, end]
            .into_iter()
            .filter(|address| !subnet.contains(*address))
            .map(|address| address.to_string())
            .collect();
        if outside.is_empty() {
            continue;
        }
        findings.push(Finding::new(
            &METALLB_RANGE_OUTSIDE_SUBNET,
            &entry.origin,
            format!(
                "metallb address range `{}` reaches outside the node subnet {subnet} ({} outside): MetalLB answers ARP for its addresses on the nodes' network, so addresses outside it are unreachable",
                entry.text,
                outside.join(" and ")
            ),
            format!("choose a range of free addresses inside {subnet}"),
        ));
    }
    findings
}

fn check_overlaps(context: &Context<'_>) -> Vec<Finding> {
    let settings = &context.cluster.settings;
    let mut taken: Vec<(Ipv4Addr, String)> = context
        .cluster
        .nodes
        .iter()
        .map(|node| (node.settings.ip, format!("node `{}`", node.name)))
        .collect();
    if let Some(gateway) = settings.network.gateway {
        taken.push((gateway, "the gateway".to_string()));
    }
    let mut findings = Vec::new();
    for entry in entries(context) {
        let Some((start, end)) = entry.range else {
            continue;
        };
        let inside: Vec<String> = taken
            .iter()
            .filter(|(address, _)| (start..=end).contains(address))
            .map(|(address, owner)| format!("{address} ({owner})"))
            .collect();
        if inside.is_empty() {
            continue;
        }
        findings.push(Finding::new(
            &METALLB_RANGE_OVERLAPS_NODES,
            &entry.origin,
            format!(
                "metallb address range `{}` holds {}: MetalLB would hand {} to LoadBalancer services and answer ARP for {}, taking traffic away from {}",
                entry.text,
                inside.join(", "),
                if inside.len() == 1 { "that address" } else { "those addresses" },
                if inside.len() == 1 { "it" } else { "them" },
                if inside.len() == 1 { "its owner" } else { "their owners" },
            ),
            "shrink or move the range so it holds only free addresses: no node, not the gateway",
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let a = |text: &str| text.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            parse_range("10.1.24.220-10.1.24.239"),
            Some((a("10.1.24.220"), a("10.1.24.239")))
        );
        assert_eq!(
            parse_range("10.1.24.224/28"),
            Some((a("10.1.24.224"), a("10.1.24.239")))
        );
        assert_eq!(parse_range("10.1.24.239-10.1.24.220"), None);
        assert_eq!(parse_range("10.1.24.220"), None);
        assert_eq!(parse_range("10.1.24.0/33"), None);
        assert_eq!(parse_range("fd00::1-fd00::9"), None);
    }
}
