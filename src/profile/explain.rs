//! `kiln eval --explain PATH`: where a value came from, like `nixos-option`.

use serde::Serialize;

use crate::diag::{did_you_mean, Diagnostic};
use crate::profile::validate::ValidCluster;
use crate::profile::value::Node;

/// One earlier value that the current one replaced (or that `unset` removed).
#[derive(Debug, Serialize)]
pub struct Step {
    /// The value, shortened.
    pub value: String,
    /// `file:line:col`.
    pub at: String,
}

/// Where a value came from.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The path asked about.
    pub path: String,
    /// The effective value (after defaults), if there is one.
    pub value: Option<serde_json::Value>,
    /// `file:line:col` that set it, or `None` when it is kiln's default.
    pub set_at: Option<String>,
    /// Values it overrode, oldest first.
    pub overrode: Vec<Step>,
    /// Set when a layer removed the value with `unset`.
    pub removed_by: Option<String>,
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => writeln!(formatter, "{} = {}", self.path, value)?,
            None => writeln!(formatter, "{} is not set", self.path)?,
        }
        match (&self.set_at, &self.removed_by) {
            (_, Some(removed_by)) => writeln!(formatter, "  removed by `unset` at {removed_by}")?,
            (Some(set_at), None) => writeln!(formatter, "  set at {set_at}")?,
            (None, None) => writeln!(formatter, "  not set by any profile file: kiln's default")?,
        }
        for step in self.overrode.iter().rev() {
            writeln!(formatter, "  overrode {} from {}", step.value, step.at)?;
        }
        Ok(())
    }
}

fn lookup_json<'a>(value: &'a serde_json::Value, path: &[&str]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(value, |current, part| match current {
        serde_json::Value::Object(map) => map.get(*part),
        serde_json::Value::Array(items) => items.get(part.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Explain a dotted path: `nodes.NAME.KEY...` for node settings, anything else for the
/// cluster file's settings.
pub fn explain(cluster: &ValidCluster, path: &str) -> Result<Explanation, Diagnostic> {
    let parts: Vec<&str> = path.split('.').filter(|part| !part.is_empty()).collect();
    let (tree, typed, rest, removals): (&Node, serde_json::Value, &[&str], &[_]) = match parts
        .as_slice()
    {
        ["nodes", name, rest @ ..] => {
            let node = cluster.node(name).ok_or_else(|| {
                let names = cluster.nodes.iter().map(|node| node.name.as_str());
                let diagnostic =
                    Diagnostic::error("unknown-path", format!("no node named `{name}`"));
                match did_you_mean(name, names) {
                    Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
                    None => diagnostic,
                }
            })?;
            let typed = serde_json::to_value(&node.settings).expect("settings serialize to JSON");
            (
                &node.merged.tree,
                typed,
                rest,
                node.merged.removals.as_slice(),
            )
        }
        _ => {
            let typed =
                serde_json::to_value(&cluster.settings).expect("settings serialize to JSON");
            (&cluster.cluster_tree, typed, parts.as_slice(), &[][..])
        }
    };
    let value = lookup_json(&typed, rest).cloned();
    if let Some(node) = tree.lookup(rest) {
        return Ok(Explanation {
            path: path.to_string(),
            value: value.or_else(|| Some(node.to_json())),
            set_at: Some(node.origin.location()),
            overrode: node
                .history
                .iter()
                .map(|step| Step {
                    value: step.summary.clone(),
                    at: step.origin.location(),
                })
                .collect(),
            removed_by: None,
        });
    }
    let dotted = rest.join(".");
    if let Some(removal) = removals.iter().rev().find(|removal| removal.path == dotted) {
        return Ok(Explanation {
            path: path.to_string(),
            value,
            set_at: None,
            overrode: vec![Step {
                value: removal.removed.summary.clone(),
                at: removal.removed.origin.location(),
            }],
            removed_by: Some(removal.origin.location()),
        });
    }
    if value.is_some() {
        return Ok(Explanation {
            path: path.to_string(),
            value,
            set_at: None,
            overrode: Vec::new(),
            removed_by: None,
        });
    }
    // Unknown: suggest the nearest key at the deepest level that exists.
    let mut diagnostic = Diagnostic::error(
        "unknown-path",
        format!("`{path}` is not a setting of this profile"),
    );
    if let Some((last, parent)) = rest.split_last() {
        if let Some(serde_json::Value::Object(map)) = lookup_json(&typed, parent) {
            if let Some(suggestion) = did_you_mean(last, map.keys().map(String::as_str)) {
                let mut suggested: Vec<&str> = parts[..parts.len() - 1].to_vec();
                suggested.push(suggestion);
                diagnostic = diagnostic.hint(format!("did you mean `{}`?", suggested.join(".")));
            } else {
                diagnostic = diagnostic.hint(format!(
                    "keys here: {}",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    Err(diagnostic
        .hint_if_empty("`kiln eval` prints every setting; node settings are under `nodes.NAME.`"))
}

impl Diagnostic {
    fn hint_if_empty(self, hint: &str) -> Self {
        if self.hint.is_some() {
            self
        } else {
            self.hint(hint)
        }
    }
}
