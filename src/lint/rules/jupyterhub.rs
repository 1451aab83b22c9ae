//! JupyterHub (the `jupyterhub` chart): idle culling, GitHub login on an air-gapped site, and
//! an OAuthenticator that admits nobody.
//!
//! Also the small helpers the application rules share (reading final Helm values, the
//! authenticator a hub uses).

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};

/// The rules of this module.
pub const RULES: &[Rule] = &[CULLING_ON, GITHUB_AIRGAPPED, NOBODY_ALLOWED];

/// Idle culling stops servers that must persist.
pub const CULLING_ON: Rule = Rule {
    id: "jupyterhub-culling-on",
    severity: Severity::Error,
    title: "JupyterHub culls idle user servers although they must persist",
    check: check_culling,
};

/// GitHub login needs github.com.
pub const GITHUB_AIRGAPPED: Rule = Rule {
    id: "jupyterhub-github-airgapped",
    severity: Severity::Error,
    title: "GitHub login on an air-gapped cluster: the hub cannot reach github.com",
    check: check_github_airgapped,
};

/// JupyterHub 5 admits nobody without an allow setting.
pub const NOBODY_ALLOWED: Rule = Rule {
    id: "jupyterhub-nobody-allowed",
    severity: Severity::Error,
    title: "An OAuthenticator with no allow setting: JupyterHub 5 admits nobody",
    check: check_nobody_allowed,
};

/// The value at `path` below `value` (object keys; array indices as numbers).
pub(crate) fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A string at `path`, if it is one.
pub(crate) fn get_str<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(value, path).and_then(Value::as_str)
}

/// Whether a value says "yes" the way Helm templates and config files read it.
pub(crate) fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(flag) => *flag,
        Value::String(text) => {
            matches!(
                text.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "on"
            )
        }
        Value::Number(number) => number.as_f64().is_some_and(|number| number != 0.0),
        _ => false,
    }
}

/// Whether a value says "no" explicitly.
pub(crate) fn is_false(value: &Value) -> bool {
    match value {
        Value::Bool(flag) => !*flag,
        Value::String(text) => matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        ),
        Value::Number(number) => number.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Whether a setting is given: not null, not an empty string, list or map, not `false`.
pub(crate) fn is_given(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::String(text) => !text.trim().is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        Value::Number(_) => true,
    }
}

/// The `jupyterhub` releases with their final values.
pub(crate) fn hubs<'a>(context: &'a Context<'_>) -> Vec<(&'a str, Value)> {
    context
        .releases_of_chart("jupyterhub")
        .into_iter()
        .filter_map(|release| Some((release, context.release_values(release)?)))
        .collect()
}

/// The authenticator a hub uses: `authenticator_class` as written and the class name it
/// stands for (`github` → `GitHubOAuthenticator`); `None` when it is not set (`dummy`).
pub(crate) fn authenticator(values: &Value) -> Option<(String, String)> {
    let written = get_str(
        values,
        &["hub", "config", "JupyterHub", "authenticator_class"],
    )?;
    let short = written.trim();
    let (local, name) = match short.strip_prefix("local-") {
        Some(rest) => ("Local", rest),
        None => ("", short),
    };
    let class = match name {
        "github" => "GitHubOAuthenticator".to_string(),
        "gitlab" => "GitLabOAuthenticator".to_string(),
        "google" => "GoogleOAuthenticator".to_string(),
        "generic-oauth" | "generic" => "GenericOAuthenticator".to_string(),
        "azuread" | "azure-ad" => "AzureAdOAuthenticator".to_string(),
        "bitbucket" => "BitbucketOAuthenticator".to_string(),
        "cilogon" => "CILogonOAuthenticator".to_string(),
        "globus" => "GlobusOAuthenticator".to_string(),
        "openshift" => "OpenShiftOAuthenticator".to_string(),
        "auth0" => "Auth0OAuthenticator".to_string(),
        "mediawiki" => "MWOAuthenticator".to_string(),
        "okpy" => "OkpyOAuthenticator".to_string(),
        // A full class path (`oauthenticator.github.GitHubOAuthenticator`) or another entry
        // point (`dummy`, `ldapauthenticator`, ...): the last dotted or `:` segment.
        other => other.rsplit(['.', ':']).next().unwrap_or(other).to_string(),
    };
    Some((written.to_string(), format!("{local}{class}")))
}

/// Whether an authenticator class is one of OAuthenticator's.
pub(crate) fn is_oauthenticator(class: &str) -> bool {
    class.ends_with("OAuthenticator") || class == "MWOAuthenticator"
}

fn check_culling(context: &Context<'_>) -> Vec<Finding> {
    if !context.cluster.settings.cluster.user_servers_persist {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (release, values) in hubs(context) {
        let enabled = get(&values, &["cull", "enabled"]);
        if enabled.is_some_and(is_false) {
            continue;
        }
        let how = match enabled {
            None => "is not set, and the chart's default is true".to_string(),
            Some(value) => format!("is {value}"),
        };
        findings.push(Finding::new(
            &CULLING_ON,
            &context.at_value(release, &["cull", "enabled"]),
            format!(
                "release `{release}`: `cull.enabled` {how}, so the hub stops user servers after \
                 an hour idle (cull.timeout), but `cluster.user_servers_persist` says they run \
                 until their owners stop them"
            ),
            format!(
                "set `cull = {{ enabled = false }}` under [helm.releases.{release}.values] (or \
                 remove `user_servers_persist = true` from [cluster] if idle servers may be \
                 stopped)"
            ),
        ));
    }
    findings
}

fn check_github_airgapped(context: &Context<'_>) -> Vec<Finding> {
    if !context.cluster.settings.cluster.airgapped {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (release, values) in hubs(context) {
        let Some((written, class)) = authenticator(&values) else {
            continue;
        };
        if !class.contains("GitHubOAuthenticator") {
            continue;
        }
        findings.push(Finding::new(
            &GITHUB_AIRGAPPED,
            &context.at_value(
                release,
                &["hub", "config", "JupyterHub", "authenticator_class"],
            ),
            format!(
                "release `{release}` logs users in with GitHub (authenticator_class = \
                 \"{written}\"), but the cluster is air-gapped: the hub must reach github.com \
                 for every login, so nobody can log in"
            ),
            "use an authenticator the hub can reach on the site (e.g. `authenticator_class = \
             \"ldapauthenticator.LDAPAuthenticator\"`, or `generic-oauth` against an on-site \
             identity provider), or set `airgapped = false` in [cluster] if the hub has a route \
             to github.com",
        ));
    }
    findings
}

/// Settings that let someone in (JupyterHub 5 and OAuthenticator 16 admit nobody without
/// one of them).
fn admits_someone(section: &serde_json::Map<String, Value>) -> bool {
    section.iter().any(|(key, value)| match key.as_str() {
        "allow_all" | "allow_existing_users" => is_true(value),
        "admin_users" => is_given(value),
        // allowed_users, allowed_organizations, allowed_teams, allowed_groups,
        // allowed_gitlab_groups, allowed_google_groups, ... (not CILogon's allowed_idps,
        // which says where users come from, not who they are).
        key if key.starts_with("allowed_") && key != "allowed_idps" => is_given(value),
        _ => false,
    })
}

fn check_nobody_allowed(context: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (release, values) in hubs(context) {
        let Some((written, class)) = authenticator(&values) else {
            continue;
        };
        if !is_oauthenticator(&class) {
            continue;
        }
        let mut sections = vec![class.clone()];
        if let Some(base) = class.strip_prefix("Local") {
            sections.push(base.to_string());
        }
        sections.extend(["OAuthenticator".to_string(), "Authenticator".to_string()]);
        let allowed = sections.iter().any(|section| {
            get(&values, &["hub", "config", section])
                .and_then(Value::as_object)
                .is_some_and(admits_someone)
        });
        if allowed {
            continue;
        }
        let origin = if get(&values, &["hub", "config", &class]).is_some() {
            context.at_value(release, &["hub", "config", &class])
        } else {
            context.at_value(
                release,
                &["hub", "config", "JupyterHub", "authenticator_class"],
            )
        };
        let example = if class.contains("GitHub") {
            "allowed_organizations = [\"ORG\"]"
        } else {
            "allowed_users = [\"NAME\"]"
        };
        findings.push(Finding::new(
            &NOBODY_ALLOWED,
            &origin,
            format!(
                "release `{release}` uses {class} (authenticator_class = \"{written}\") with none \
                 of allowed_users, allowed_organizations, allowed_teams, allow_all, \
                 allow_existing_users or admin_users under hub.config.{class} or \
                 hub.config.Authenticator: JupyterHub 5 admits nobody"
            ),
            format!(
                "add `{example}` (or allowed_users, allowed_teams, `allow_all = true`) under \
                 [helm.releases.{release}.values.hub.config.{class}]"
            ),
        ));
    }
    findings
}
