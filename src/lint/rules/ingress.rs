//! Ingress: TCP forwarding written for the controller the channel does not have (MicroK8s
//! ≤ 1.34 ships NGINX, 1.35 Traefik).

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::rules::jupyterhub::{get, get_str, hubs, is_given, is_true};
use crate::lint::{Context, Finding, Rule};

/// The rules of this module.
pub const RULES: &[Rule] = &[TCP_WRONG_CONTROLLER];

/// TCP forwarding for the wrong ingress controller.
pub const TCP_WRONG_CONTROLLER: Rule = Rule {
    id: "ingress-tcp-wrong-controller",
    severity: Severity::Error,
    title: "TCP forwarding written for an ingress controller the MicroK8s channel does not ship",
    check: check_tcp,
};

/// Whether a hub runs the chart's own Traefik (autohttps): HTTPS on, type letsencrypt (the
/// default), and hosts.
fn autohttps(values: &Value) -> bool {
    get(values, &["proxy", "https", "enabled"]).is_some_and(is_true)
        && get_str(values, &["proxy", "https", "type"]).unwrap_or("letsencrypt") == "letsencrypt"
        && get(values, &["proxy", "https", "hosts"]).is_some_and(is_given)
}

fn check_tcp(context: &Context<'_>) -> Vec<Finding> {
    let Some(microk8s) = &context.cluster.settings.microk8s else {
        return Vec::new();
    };
    let Some(track) = microk8s.track() else {
        return Vec::new();
    };
    let channel = &microk8s.channel;
    let mut findings = Vec::new();
    if track >= (1, 35) {
        if let Some((port, target)) = microk8s.ingress_tcp.first() {
            findings.push(Finding::new(
                &TCP_WRONG_CONTROLLER,
                &context.at(&["microk8s", "ingress_tcp"]),
                format!(
                    "[microk8s.ingress_tcp] (port {port} → {target}) writes the NGINX ingress' \
                     TCP ConfigMap, but channel {channel} ships Traefik as its ingress: nothing \
                     reads the ConfigMap and the port is not forwarded"
                ),
                "on 1.35 forward TCP with a Traefik entry point (`ports.NAME` values of a \
                 release of chart `traefik`, plus an IngressRouteTCP in manifests/), or give \
                 the service its own address (`ssh.service.type = \"LoadBalancer\"` with \
                 MetalLB); or stay on channel \"1.34/stable\" and keep [microk8s.ingress_tcp]",
            ));
        }
        return findings;
    }
    let nginx = microk8s
        .addons
        .get("ingress")
        .is_some_and(|addon| addon.enabled);
    if nginx {
        for release in context.releases_of_chart("traefik") {
            let Some(values) = context.release_values(release) else {
                continue;
            };
            let Some((name, _)) = get(&values, &["ports"])
                .and_then(Value::as_object)
                .and_then(|ports| ports.iter().next())
            else {
                continue;
            };
            findings.push(Finding::new(
                &TCP_WRONG_CONTROLLER,
                &context.at_value(release, &["ports", name]),
                format!(
                    "release `{release}` opens Traefik entry points (ports.{name}), but on \
                     channel {channel} the ingress addon is NGINX, which holds the host's ports \
                     80 and 443 and forwards TCP only through its ConfigMap"
                ),
                "forward the port with [microk8s.ingress_tcp] (`\"PORT\" = \
                 \"NAMESPACE/SERVICE:PORT\"`) and remove the traefik release, or move to \
                 channel \"1.35/stable\", whose ingress is Traefik",
            ));
        }
    }
    for (release, values) in hubs(context) {
        if autohttps(&values) {
            continue;
        }
        let tcp = [
            &["proxy", "traefik", "extraPorts"][..],
            &["proxy", "traefik", "extraStaticConfig", "entryPoints"][..],
            &["proxy", "traefik", "extraDynamicConfig", "tcp"][..],
        ]
        .into_iter()
        .find(|path| get(&values, path).is_some_and(is_given));
        let Some(path) = tcp else {
            continue;
        };
        findings.push(Finding::new(
            &TCP_WRONG_CONTROLLER,
            &context.at_value(release, path),
            format!(
                "release `{release}` sets TCP forwarding in `{}`, but the chart runs Traefik \
                 only with autohttps (proxy.https.type letsencrypt), which is off, and on \
                 channel {channel} MicroK8s' ingress is NGINX: nothing forwards the port",
                path.join(".")
            ),
            format!(
                "remove `{}` and forward the port with [microk8s.ingress_tcp] (`\"2222\" = \
                 \"NAMESPACE/jupyterhub-ssh:22\"`), or give the service a LoadBalancer address",
                path.join(".")
            ),
        ));
    }
    findings
}
