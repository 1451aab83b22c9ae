//! `kiln lint`: the failures the seed's admin found the hard way, caught before a machine
//! is touched.
//!
//! Each rule has a stable id, a severity, a message that points at the profile
//! (`file:line:col`) and a fix hint. Rules read the validated cluster and, where the file
//! a node receives is what matters (launch configurations, Helm values), what `render`
//! produces for it. Secrets are not needed: lint renders with placeholders, and a rule that
//! needs a real value (the join token's length) checks it only when the value is supplied.

pub mod output;
pub mod rules;

use std::collections::BTreeMap;

use crate::diag::Severity;
use crate::lock::file::LockFile;
use crate::profile::secrets::Secrets;
use crate::profile::source::Origin;
use crate::profile::ValidCluster;
use crate::render::Rendered;
use crate::store::Store;

/// A lint rule.
pub struct Rule {
    /// Stable id, e.g. `dns-upstream-unroutable`.
    pub id: &'static str,
    /// Error (stops `kiln build`) or warning.
    pub severity: Severity,
    /// One line saying what the rule is about.
    pub title: &'static str,
    /// The check.
    pub check: fn(&Context<'_>) -> Vec<Finding>,
}

/// One finding of a rule.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The rule's id.
    pub rule: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// What is wrong, here.
    pub message: String,
    /// Where in the profile.
    pub origin: Origin,
    /// How to fix it.
    pub hint: String,
}

impl Finding {
    /// A finding at `origin`.
    pub fn new(
        rule: &Rule,
        origin: &Origin,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding {
            rule: rule.id,
            severity: rule.severity,
            message: message.into(),
            origin: origin.clone(),
            hint: hint.into(),
        }
    }
}

/// What rules read.
pub struct Context<'a> {
    /// The validated cluster.
    pub cluster: &'a ValidCluster,
    /// Every node's rendered files (with placeholder secrets).
    pub rendered: &'a Rendered,
    /// Secrets that were actually supplied (for rules that need a value).
    pub secrets: &'a Secrets,
    /// The lock, when the profile has one.
    pub lock: Option<&'a LockFile>,
    /// The store, when one exists (for charts' own values schemas).
    pub store: Option<&'a Store>,
}

impl Context<'_> {
    /// A Helm release's final values (kiln's defaults with the profile's merged over them),
    /// as rendered for the first control plane; `None` if the cluster has no such release.
    pub fn release_values(&self, release: &str) -> Option<serde_json::Value> {
        let first = self.cluster.first_control_plane()?;
        let tree = self.rendered.nodes.get(&first.name)?;
        let file = tree
            .files
            .get(&format!("root/etc/kiln/helm/{release}.values.yaml"))?;
        serde_yaml::from_slice(&file.contents).ok()
    }

    /// The releases whose chart is `chart`, by release name.
    pub fn releases_of_chart(&self, chart: &str) -> Vec<&str> {
        self.cluster
            .settings
            .helm
            .releases
            .iter()
            .filter(|(_, release)| release.chart == chart)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The origin of a cluster setting (or its nearest parent that exists).
    pub fn at(&self, path: &[&str]) -> Origin {
        self.cluster.cluster_tree.origin_near(path).clone()
    }

    /// The origin of a value inside a release's profile values, or of the release itself
    /// when the value comes from kiln's defaults.
    pub fn at_value(&self, release: &str, path: &[&str]) -> Origin {
        let mut full = vec!["helm", "releases", release, "values"];
        full.extend_from_slice(path);
        self.at(&full)
    }
}

/// Every rule, group by group.
pub fn all_rules() -> Vec<&'static Rule> {
    rules::GROUPS
        .iter()
        .flat_map(|group| group.iter())
        .collect()
}

/// Run every rule and return the findings, errors first, then by file and line.
pub fn lint(context: &Context<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = all_rules()
        .into_iter()
        .flat_map(|rule| (rule.check)(context))
        .collect();
    let key = |finding: &Finding| {
        let (file, line, column) = match &finding.origin {
            Origin::File { file, span } => {
                let (line, column) = file.line_col(span.start);
                (file.display.clone(), line, column)
            }
            Origin::Default => (String::new(), 0, 0),
        };
        (
            std::cmp::Reverse(finding.severity),
            file,
            line,
            column,
            finding.rule,
        )
    };
    findings.sort_by_key(key);
    findings
}

/// Count findings by severity.
pub fn counts(findings: &[Finding]) -> BTreeMap<Severity, usize> {
    let mut counts = BTreeMap::new();
    for finding in findings {
        *counts.entry(finding.severity).or_insert(0) += 1;
    }
    counts
}
