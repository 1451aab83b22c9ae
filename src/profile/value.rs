//! The profile value tree: TOML values that remember where they were written.
//!
//! Layers are parsed into this tree, merged in it (see `merge`), and only then turned into
//! typed settings (see `de`). Keeping the origin on every value is what lets kiln say
//! `file:line:col` for a type error found after a merge, and lets `eval --explain` name the
//! layer that set a value and what it overrode.

use std::sync::Arc;

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use crate::profile::source::{Origin, SourceFile};

/// A value together with where it was written and what it replaced.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where this value was written.
    pub origin: Origin,
    /// Values this one overrode in earlier layers, oldest first.
    pub history: Vec<Overridden>,
}

/// A value that a later layer replaced (or removed).
#[derive(Clone, Debug)]
pub struct Overridden {
    /// Where the replaced value was written.
    pub origin: Origin,
    /// The replaced value, shortened for display.
    pub summary: String,
}

/// A TOML value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// A date-time, kept as written.
    Datetime(String),
    /// An array.
    Array(Vec<Node>),
    /// A table, in source order.
    Table(Table),
}

/// A table entry: the key's own position and the value.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Where the key was written (what "unknown key" errors point at).
    pub key_origin: Origin,
    /// The value.
    pub node: Node,
}

/// A table in source order.
pub type Table = IndexMap<String, Entry>;

impl Node {
    /// A node with no history.
    pub fn new(value: Value, origin: Origin) -> Self {
        Node {
            value,
            origin,
            history: Vec::new(),
        }
    }

    /// The table inside, if this is a table.
    pub fn as_table(&self) -> Option<&Table> {
        match &self.value {
            Value::Table(table) => Some(table),
            _ => None,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// Follow a dotted path of table keys and array indices.
    pub fn lookup(&self, path: &[&str]) -> Option<&Node> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        match &self.value {
            Value::Table(table) => table.get(*first)?.node.lookup(rest),
            Value::Array(items) => items.get(first.parse::<usize>().ok()?)?.lookup(rest),
            _ => None,
        }
    }

    /// The key's origin at a path (for "unknown key"-style messages), else the value's.
    pub fn key_origin(&self, path: &[&str]) -> Option<&Origin> {
        let (last, parent) = path.split_last()?;
        match &self.lookup(parent)?.value {
            Value::Table(table) => table.get(*last).map(|entry| &entry.key_origin),
            _ => self.lookup(path).map(|node| &node.origin),
        }
    }

    /// The origin of the value at `path`, falling back to the closest parent that exists.
    pub fn origin_near(&self, path: &[&str]) -> &Origin {
        let mut depth = path.len();
        loop {
            if let Some(node) = self.lookup(&path[..depth]) {
                return &node.origin;
            }
            depth -= 1;
        }
    }

    /// A short rendering for messages: scalars in TOML syntax, collections by size.
    pub fn summary(&self) -> String {
        match &self.value {
            Value::String(text) => {
                let mut shown: String = text.chars().take(60).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                format!("{shown:?}")
            }
            Value::Integer(number) => number.to_string(),
            Value::Float(number) => number.to_string(),
            Value::Boolean(flag) => flag.to_string(),
            Value::Datetime(text) => text.clone(),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(Node::summary).collect();
                let joined = format!("[{}]", parts.join(", "));
                if joined.chars().count() > 80 {
                    format!("[… {} items]", items.len())
                } else {
                    joined
                }
            }
            Value::Table(table) => format!("{{ {} keys }}", table.len()),
        }
    }

    /// The TOML type name, as used in "wrong type" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }

    /// This value as JSON (origins dropped), for output and templates.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::String(text) | Value::Datetime(text) => serde_json::Value::String(text.clone()),
            Value::Integer(number) => serde_json::Value::from(*number),
            Value::Float(number) => serde_json::Number::from_f64(*number)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Boolean(flag) => serde_json::Value::Bool(*flag),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Table(table) => serde_json::Value::Object(
                table
                    .iter()
                    .map(|(key, entry)| (key.clone(), entry.node.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Convert a parsed TOML document into a tree whose origins point into `file`.
pub fn from_toml(file: &Arc<SourceFile>, value: &toml::Spanned<DeValue<'_>>) -> Node {
    let origin = Origin::file(file, value.span());
    let converted = match value.get_ref() {
        DeValue::String(text) => Value::String(text.to_string()),
        DeValue::Integer(integer) => match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(number) => Value::Integer(number),
            // Larger than i64: no setting of kiln's takes such a number; keep the text so the
            // type check reports it at its position.
            Err(_) => Value::String(integer.to_string()),
        },
        DeValue::Float(float) => Value::Float(float.as_str().parse::<f64>().unwrap_or(f64::NAN)),
        DeValue::Boolean(flag) => Value::Boolean(*flag),
        DeValue::Datetime(datetime) => Value::Datetime(datetime.to_string()),
        DeValue::Array(items) => {
            Value::Array(items.iter().map(|item| from_toml(file, item)).collect())
        }
        DeValue::Table(table) => Value::Table(table_from_toml(file, table)),
    };
    Node::new(converted, origin)
}

fn table_from_toml(file: &Arc<SourceFile>, table: &DeTable<'_>) -> Table {
    table
        .iter()
        .map(|(key, value)| {
            (
                key.get_ref().to_string(),
                Entry {
                    key_origin: Origin::file(file, key.span()),
                    node: from_toml(file, value),
                },
            )
        })
        .collect()
}
