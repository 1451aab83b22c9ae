//! Deep merge of layers, remembering what each layer overrode.
//!
//! The rules (the README states them for users):
//! - tables merge key by key, recursively;
//! - everything else (strings, numbers, booleans, arrays) is replaced by the later layer;
//! - a key written with a trailing `+` (`"packages+" = ["htop"]`) appends to the array the
//!   earlier layers built instead of replacing it;
//! - `unset = ["path.to.key", ...]` at the top of a layer removes those keys (and everything
//!   below them) from what the earlier layers built, before the layer's own values apply.
//!
//! Replacing arrays by default is what Helm and Kustomize do for values, and it keeps a node's
//! file readable on its own: what you see is what you get. Appending is explicit.

use crate::diag::Diagnostic;
use crate::profile::source::Origin;
use crate::profile::value::{Entry, Node, Overridden, Table, Value};

/// The key that removes values in a layer.
pub const UNSET_KEY: &str = "unset";

/// A value that a layer removed with `unset`, kept for `eval --explain`.
#[derive(Clone, Debug)]
pub struct Removal {
    /// The dotted path that was removed.
    pub path: String,
    /// Where the `unset` entry was written.
    pub origin: Origin,
    /// What was there before.
    pub removed: Overridden,
}

/// The result of merging layers: the tree and what was removed on the way.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The merged tree (always a table).
    pub tree: Node,
    /// Values removed by `unset`, in the order they were removed.
    pub removals: Vec<Removal>,
}

impl Merged {
    /// An empty table to merge layers into.
    pub fn empty() -> Self {
        Merged {
            tree: Node::new(Value::Table(Table::new()), Origin::Default),
            removals: Vec::new(),
        }
    }

    /// Apply one layer (a table) on top.
    pub fn apply(&mut self, layer: &Node) -> Result<(), Diagnostic> {
        let Value::Table(layer_table) = &layer.value else {
            return Err(
                Diagnostic::error("wrong-type", "a layer must be a table").at(&layer.origin)
            );
        };
        if let Some(unset) = layer_table.get(UNSET_KEY) {
            self.unset(unset)?;
        }
        let Value::Table(base) = &mut self.tree.value else {
            unreachable!(
                "the merged tree is created as a table and only tables are merged into it"
            );
        };
        merge_table(base, layer_table, true)?;
        if matches!(self.tree.origin, Origin::Default) {
            self.tree.origin = layer.origin.clone();
        }
        Ok(())
    }

    fn unset(&mut self, unset: &Entry) -> Result<(), Diagnostic> {
        let paths = match &unset.node.value {
            Value::Array(items) => items,
            _ => {
                return Err(Diagnostic::error(
                    "wrong-type",
                    format!(
                        "`unset` must be an array of dotted key paths, found {}",
                        unset.node.type_name()
                    ),
                )
                .at(&unset.node.origin)
                .hint("unset = [\"microk8s.addons.hostpath-storage\", \"packages\"]"));
            }
        };
        for item in paths {
            let Some(path) = item.as_str() else {
                return Err(Diagnostic::error(
                    "wrong-type",
                    format!(
                        "`unset` entries must be strings, found {}",
                        item.type_name()
                    ),
                )
                .at(&item.origin));
            };
            let parts: Vec<&str> = path.split('.').collect();
            match remove_path(&mut self.tree, &parts) {
                Some(removed) => self.removals.push(Removal {
                    path: path.to_string(),
                    origin: item.origin.clone(),
                    removed: Overridden {
                        origin: removed.origin.clone(),
                        summary: removed.summary(),
                    },
                }),
                None => {
                    return Err(Diagnostic::error(
                        "unset-missing",
                        format!("`unset` names `{path}`, which no earlier layer sets"),
                    )
                    .at(&item.origin)
                    .hint("check the spelling; `kiln eval --node NAME` shows what the earlier layers set"));
                }
            }
        }
        Ok(())
    }
}

fn remove_path(node: &mut Node, path: &[&str]) -> Option<Node> {
    let (first, rest) = path.split_first()?;
    let Value::Table(table) = &mut node.value else {
        return None;
    };
    if rest.is_empty() {
        return table.shift_remove(*first).map(|entry| entry.node);
    }
    remove_path(&mut table.get_mut(*first)?.node, rest)
}

/// Merge `layer` into `base`. `at_layer_root` skips the `unset` key, which `apply` handles.
fn merge_table(base: &mut Table, layer: &Table, at_layer_root: bool) -> Result<(), Diagnostic> {
    for (raw_key, entry) in layer {
        if at_layer_root && raw_key == UNSET_KEY {
            continue;
        }
        let (key, append) = match raw_key.strip_suffix('+') {
            Some(stripped) if !stripped.is_empty() => (stripped, true),
            _ => (raw_key.as_str(), false),
        };
        if append && !matches!(entry.node.value, Value::Array(_)) {
            return Err(Diagnostic::error(
                "wrong-type",
                format!(
                    "`{raw_key}` appends to an array, so its value must be an array, found {}",
                    entry.node.type_name()
                ),
            )
            .at(&entry.node.origin));
        }
        let incoming = normalize(&entry.node)?;
        match base.get_mut(key) {
            None => {
                base.insert(
                    key.to_string(),
                    Entry {
                        key_origin: entry.key_origin.clone(),
                        node: incoming,
                    },
                );
            }
            Some(existing) => {
                let existing_summary = existing.node.summary();
                match (&mut existing.node.value, incoming.value) {
                    (Value::Table(base_table), Value::Table(layer_table)) if !append => {
                        merge_table(base_table, &layer_table, false)?;
                    }
                    (Value::Array(base_items), Value::Array(layer_items)) if append => {
                        let previous = Overridden {
                            origin: existing.node.origin.clone(),
                            summary: format!("{existing_summary} (appended to)"),
                        };
                        base_items.extend(layer_items);
                        existing.node.history.push(previous);
                        existing.node.origin = incoming.origin;
                    }
                    (_, _) if append => {
                        return Err(Diagnostic::error(
                            "wrong-type",
                            format!(
                                "`{raw_key}` appends to `{key}`, but the earlier value is {}, not an array",
                                existing.node.type_name()
                            ),
                        )
                        .at(&entry.key_origin)
                        .note(&existing.node.origin, "the earlier value"));
                    }
                    (_, new_value) => {
                        let mut history = std::mem::take(&mut existing.node.history);
                        history.push(Overridden {
                            origin: existing.node.origin.clone(),
                            summary: existing.node.summary(),
                        });
                        existing.node = Node {
                            value: new_value,
                            origin: incoming.origin,
                            history,
                        };
                        existing.key_origin = entry.key_origin.clone();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Resolve `+` keys inside a value that has nothing beneath it to merge with.
fn normalize(node: &Node) -> Result<Node, Diagnostic> {
    match &node.value {
        Value::Table(table) => {
            let mut fresh = Table::new();
            merge_table(&mut fresh, table, false)?;
            Ok(Node {
                value: Value::Table(fresh),
                origin: node.origin.clone(),
                history: node.history.clone(),
            })
        }
        _ => Ok(node.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::source::SourceFile;
    use crate::profile::value::from_toml;
    use std::path::Path;

    fn layer(name: &str, text: &str) -> Node {
        let file = SourceFile::new(Path::new(name), text.to_string());
        let parsed = toml::de::DeTable::parse(&file.text).expect("valid TOML");
        let value =
            toml::Spanned::new(parsed.span(), toml::de::DeValue::Table(parsed.into_inner()));
        from_toml(&file, &value)
    }

    fn merged(layers: &[(&str, &str)]) -> Result<Merged, Diagnostic> {
        let mut merged = Merged::empty();
        for (name, text) in layers {
            merged.apply(&layer(name, text))?;
        }
        Ok(merged)
    }

    #[test]
    fn tables_merge_and_scalars_replace_with_history() {
        let result = merged(&[
            ("a.toml", "[gpu]\ndriver = \"550\"\noptional = false\n"),
            ("b.toml", "[gpu]\ndriver = \"580\"\n"),
        ])
        .unwrap();
        let driver = result.tree.lookup(&["gpu", "driver"]).unwrap();
        assert_eq!(driver.as_str(), Some("580"));
        assert_eq!(driver.origin.location(), "b.toml:2:10");
        assert_eq!(driver.history.len(), 1);
        assert_eq!(driver.history[0].origin.location(), "a.toml:2:10");
        assert_eq!(driver.history[0].summary, "\"550\"");
        let optional = result.tree.lookup(&["gpu", "optional"]).unwrap();
        assert_eq!(optional.origin.location(), "a.toml:3:12");
    }

    #[test]
    fn arrays_replace_unless_appended() {
        let result = merged(&[
            ("a.toml", "packages = [\"a\"]\nlabels = [\"x\"]\n"),
            ("b.toml", "\"packages+\" = [\"b\"]\nlabels = [\"y\"]\n"),
        ])
        .unwrap();
        let json = result.tree.to_json();
        assert_eq!(json["packages"], serde_json::json!(["a", "b"]));
        assert_eq!(json["labels"], serde_json::json!(["y"]));
    }

    #[test]
    fn append_without_base_sets_the_array() {
        let result = merged(&[("a.toml", "[x]\n\"items+\" = [1]\n")]).unwrap();
        assert_eq!(result.tree.to_json()["x"]["items"], serde_json::json!([1]));
    }

    #[test]
    fn unset_removes_and_is_remembered() {
        let result = merged(&[
            ("a.toml", "[microk8s.addons]\ndns = true\nhostpath = true\n"),
            ("b.toml", "unset = [\"microk8s.addons.hostpath\"]\n"),
        ])
        .unwrap();
        assert!(result
            .tree
            .lookup(&["microk8s", "addons", "hostpath"])
            .is_none());
        assert!(result.tree.lookup(&["microk8s", "addons", "dns"]).is_some());
        assert_eq!(result.removals[0].path, "microk8s.addons.hostpath");
        assert_eq!(result.removals[0].origin.location(), "b.toml:1:10");
    }

    #[test]
    fn unset_of_missing_path_is_an_error() {
        let error = merged(&[("a.toml", "x = 1\n"), ("b.toml", "unset = [\"y\"]\n")]).unwrap_err();
        assert_eq!(error.code, "unset-missing");
    }

    #[test]
    fn append_to_non_array_is_an_error() {
        let error = merged(&[("a.toml", "x = 1\n"), ("b.toml", "\"x+\" = [2]\n")]).unwrap_err();
        assert_eq!(error.code, "wrong-type");
    }
}
