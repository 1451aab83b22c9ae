//! Loading a profile: the cluster file, its role layers, and each node's merged settings.
//!
//! Layer order for a node: `[defaults]` of the cluster file, then each role named in the
//! node's `roles` (in that order), then `[nodes.NAME]`. Roles are looked up in the profile's
//! own `roles/` first, then in the shared `roles/` beside the profile directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{did_you_mean, Diagnostic, Findings};
use crate::profile::merge::Merged;
use crate::profile::source::{Origin, SourceFile};
use crate::profile::value::{from_toml, Entry, Node, Value};

/// The file name of a cluster's description inside its profile directory.
pub const CLUSTER_FILE: &str = "cluster.toml";

/// A loaded, merged, not yet validated profile.
#[derive(Debug)]
pub struct Profile {
    /// The profile directory.
    pub dir: PathBuf,
    /// The cluster file.
    pub cluster_file: Arc<SourceFile>,
    /// The cluster file's tree without `[defaults]` and `[nodes]`.
    pub cluster_tree: Node,
    /// Nodes in file order.
    pub nodes: Vec<NodeLayers>,
}

/// One node's layers and their merge.
#[derive(Debug)]
pub struct NodeLayers {
    /// The node's name (its key in `[nodes]`).
    pub name: String,
    /// Where the node's table starts.
    pub origin: Origin,
    /// The layers applied, in order, for display: `defaults`, `role NAME (path)`, `node NAME`.
    pub layers: Vec<String>,
    /// The merged settings.
    pub merged: Merged,
}

/// Read and parse one TOML file into a tree.
pub fn parse_file(path: &Path) -> Result<(Arc<SourceFile>, Node), Diagnostic> {
    let text = fs_err::read_to_string(path).map_err(|error| {
        Diagnostic::error("io", error.to_string()).hint("check the path given with --profile")
    })?;
    let file = SourceFile::new(path, text);
    let parsed = toml::de::DeTable::parse(&file.text).map_err(|error| {
        let origin = Origin::file(&file, error.span().unwrap_or(0..0));
        let message = error.message().trim().to_string();
        let diagnostic = Diagnostic::error("toml-syntax", message.clone()).at(&origin);
        if message.starts_with("duplicate key") {
            diagnostic.hint(
                "each key and [table] may appear once per file: node names and keys must be unique",
            )
        } else {
            diagnostic
        }
    })?;
    let value = toml::Spanned::new(parsed.span(), toml::de::DeValue::Table(parsed.into_inner()));
    let node = from_toml(&file, &value);
    Ok((file, node))
}

/// Find the cluster file for a `--profile` argument: a directory or the file itself.
pub fn cluster_path(profile: &Path) -> PathBuf {
    if profile.is_dir() {
        profile.join(CLUSTER_FILE)
    } else {
        profile.to_path_buf()
    }
}

/// Load a profile and merge every node's layers.
pub fn load(profile: &Path) -> Result<Profile, Findings> {
    let path = cluster_path(profile);
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (cluster_file, mut root) = parse_file(&path)?;
    let Value::Table(root_table) = &mut root.value else {
        unreachable!("a parsed TOML document is a table");
    };
    let defaults = root_table.shift_remove("defaults");
    let nodes_entry = root_table.shift_remove("nodes");

    let mut roles = RoleFiles::new(&dir);
    let mut findings = Vec::new();
    let mut nodes = Vec::new();

    if let Some(defaults) = &defaults {
        if let Err(diagnostic) = forbid_roles(&defaults.node, "[defaults]") {
            findings.push(diagnostic);
        }
    }

    let node_tables = match &nodes_entry {
        None => {
            findings.push(
                Diagnostic::error("missing-value", "the cluster has no nodes")
                    .at(&Origin::file(&cluster_file, 0..0))
                    .hint("add a node: [nodes.node1] with roles, mac and ip"),
            );
            Vec::new()
        }
        Some(entry) => match &entry.node.value {
            Value::Table(table) => table.iter().collect(),
            _ => {
                findings.push(
                    Diagnostic::error(
                        "wrong-type",
                        format!(
                            "`nodes` must be a table of node tables, found {}",
                            entry.node.type_name()
                        ),
                    )
                    .at(&entry.node.origin),
                );
                Vec::new()
            }
        },
    };

    for (name, entry) in node_tables {
        match merge_node(name, entry, defaults.as_ref(), &mut roles) {
            Ok(node) => nodes.push(node),
            Err(diagnostic) => findings.push(diagnostic),
        }
    }

    if findings.is_empty() {
        Ok(Profile {
            dir,
            cluster_file,
            cluster_tree: root,
            nodes,
        })
    } else {
        Err(Findings(findings))
    }
}

fn forbid_roles(layer: &Node, what: &str) -> Result<(), Diagnostic> {
    if let Some(table) = layer.as_table() {
        if let Some(entry) = table.get("roles") {
            return Err(Diagnostic::error(
                "misplaced-key",
                format!("`roles` cannot be set in {what}"),
            )
            .at(&entry.key_origin)
            .hint("roles are listed on each node: [nodes.NAME] roles = [...]"));
        }
    }
    Ok(())
}

fn merge_node(
    name: &str,
    entry: &Entry,
    defaults: Option<&Entry>,
    roles: &mut RoleFiles,
) -> Result<NodeLayers, Diagnostic> {
    let node_table = entry.node.as_table().ok_or_else(|| {
        Diagnostic::error(
            "wrong-type",
            format!(
                "node `{name}` must be a table, found {}",
                entry.node.type_name()
            ),
        )
        .at(&entry.node.origin)
    })?;
    let mut merged = Merged::empty();
    let mut layers = Vec::new();
    if let Some(defaults) = defaults {
        merged.apply(&defaults.node)?;
        layers.push("defaults".to_string());
    }
    if let Some(role_entry) = node_table.get("roles") {
        let Value::Array(items) = &role_entry.node.value else {
            return Err(Diagnostic::error(
                "wrong-type",
                format!(
                    "wrong type: expected an array of role names, found {}",
                    role_entry.node.type_name()
                ),
            )
            .at(&role_entry.node.origin));
        };
        for item in items {
            let Some(role) = item.as_str() else {
                return Err(Diagnostic::error(
                    "wrong-type",
                    format!(
                        "wrong type: expected a role name, found {}",
                        item.type_name()
                    ),
                )
                .at(&item.origin));
            };
            let (file, layer) = roles.get(role, &item.origin)?;
            forbid_roles(&layer, &format!("role `{role}`"))?;
            merged.apply(&layer)?;
            layers.push(format!("role {role} ({})", file.display));
        }
    }
    merged.apply(&entry.node)?;
    // Missing keys are reported at the node's table, not at the first layer's first line.
    merged.tree.origin = entry.key_origin.clone();
    layers.push(format!("node {name}"));
    Ok(NodeLayers {
        name: name.to_string(),
        origin: entry.key_origin.clone(),
        layers,
        merged,
    })
}

/// Role files, parsed once.
struct RoleFiles {
    search: Vec<PathBuf>,
    cache: BTreeMap<String, (Arc<SourceFile>, Node)>,
}

impl RoleFiles {
    fn new(profile_dir: &Path) -> Self {
        let mut search = vec![profile_dir.join("roles")];
        if let Some(parent) = profile_dir.parent() {
            search.push(parent.join("roles"));
        }
        RoleFiles {
            search,
            cache: BTreeMap::new(),
        }
    }

    fn get(&mut self, role: &str, used_at: &Origin) -> Result<(Arc<SourceFile>, Node), Diagnostic> {
        if let Some(found) = self.cache.get(role) {
            return Ok(found.clone());
        }
        let valid_name = !role.is_empty()
            && role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let path = valid_name
            .then(|| {
                self.search
                    .iter()
                    .map(|dir| dir.join(format!("{role}.toml")))
                    .find(|path| path.is_file())
            })
            .flatten();
        let Some(path) = path else {
            let available = self.available();
            let mut diagnostic =
                Diagnostic::error("unknown-role", format!("unknown role `{role}`")).at(used_at);
            diagnostic = match did_you_mean(role, available.iter().map(String::as_str)) {
                Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
                None => diagnostic.hint(format!(
                    "roles are files ROLE.toml in {}; available: {}",
                    self.search
                        .iter()
                        .map(|dir| crate::profile::source::display_path(dir))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    available.join(", ")
                )),
            };
            return Err(diagnostic);
        };
        let parsed = parse_file(&path)?;
        self.cache.insert(role.to_string(), parsed.clone());
        Ok(parsed)
    }

    fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .search
            .iter()
            .filter_map(|dir| fs_err::read_dir(dir).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
