//! Helm values checked against the chart's own `values.schema.json`, as `helm install` would
//! check them on the node, but before anything is built.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use crate::diag::Severity;
use crate::lint::{Context, Finding, Rule};
use crate::store::Digest;

/// The rules of this module.
pub const RULES: &[Rule] = &[VALUES_SCHEMA];

/// Values the chart's schema rejects.
pub const VALUES_SCHEMA: Rule = Rule {
    id: "helm-values-schema",
    severity: Severity::Error,
    title: "Helm values that the chart's values.schema.json rejects",
    check: check_schema,
};

/// The largest file read from a chart archive.
const MAX_FILE: u64 = 32 << 20;

/// A chart's `values.yaml` and `values.schema.json`, read from its archive.
pub(crate) struct ChartFiles {
    /// The chart's default values (an empty map when it has none).
    pub values: Value,
    /// Its schema, if it ships one.
    pub schema: Option<Value>,
}

/// Read `<chart>/values.yaml` and `<chart>/values.schema.json` from a chart archive (.tgz);
/// `None` if it cannot be read.
pub(crate) fn read_chart(path: &Path) -> Option<ChartFiles> {
    let file = fs_err::File::open(path).ok()?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut values = None;
    let mut schema = None;
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let name = entry.path().ok()?.to_string_lossy().to_string();
        let parts: Vec<&str> = name.trim_start_matches("./").split('/').collect();
        // Only the chart's own files, not those of its subcharts (`chart/charts/sub/...`).
        let [_, file] = parts.as_slice() else {
            continue;
        };
        let file = file.to_string();
        if file != "values.yaml" && file != "values.schema.json" {
            continue;
        }
        if entry.size() > MAX_FILE {
            return None;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).ok()?;
        if file == "values.yaml" {
            values = Some(serde_yaml::from_slice::<Value>(&bytes).ok()?);
        } else {
            schema = Some(serde_json::from_slice::<Value>(&bytes).ok()?);
        }
    }
    let values = match values {
        Some(Value::Object(map)) => Value::Object(map),
        _ => Value::Object(serde_json::Map::new()),
    };
    Some(ChartFiles { values, schema })
}

/// Helm's merge of user values over chart values: maps merge, anything else replaces, and a
/// null removes the chart's key.
fn coalesce(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.remove(key);
                    continue;
                }
                match base.get_mut(key) {
                    Some(existing) => coalesce(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// JSON pointer → path segments.
fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn check_schema(context: &Context<'_>) -> Vec<Finding> {
    let (Some(lock), Some(store)) = (context.lock, context.store) else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for (name, release) in &context.cluster.settings.helm.releases {
        let Some(locked) = lock.charts.iter().find(|chart| {
            chart.name == release.chart
                && chart.version == release.version
                && chart.repository == release.repository
        }) else {
            continue;
        };
        let Ok(digest) = Digest::from_str(&locked.digest) else {
            continue;
        };
        let blob = store.blob_path(&digest);
        if !blob.is_file() {
            continue;
        }
        let Some(chart) = read_chart(&blob) else {
            continue;
        };
        let Some(schema) = chart.schema else {
            continue;
        };
        let Ok(validator) = jsonschema::draft7::new(&schema) else {
            continue;
        };
        let Some(values) = context.release_values(name) else {
            continue;
        };
        let mut merged = chart.values;
        coalesce(&mut merged, &values);
        for error in validator.iter_errors(&merged) {
            let mut path = segments(error.instance_path().as_str());
            // An unknown key: point at the key itself.
            if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
                error.kind()
            {
                if let Some(first) = unexpected.first() {
                    path.push(first.clone());
                }
            }
            let shown = if path.is_empty() {
                "(top level)".to_string()
            } else {
                path.join(".")
            };
            let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
            // Masked: a rejected value may be a secret.
            let complaint = error.masked().to_string();
            findings.push(Finding::new(
                &VALUES_SCHEMA,
                &context.at_value(name, &path_refs),
                format!(
                    "release `{name}`: chart {} {}'s values.schema.json rejects `{shown}`: \
                     {complaint}",
                    release.chart, release.version
                ),
                format!(
                    "fix the value under [helm.releases.{name}.values] (see the chart's \
                     values.yaml for the keys it knows; a misspelt key is an unknown key)"
                ),
            ));
        }
    }
    findings
}
