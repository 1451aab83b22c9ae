//! Typed settings from the value tree, with errors that point at the source.
//!
//! A serde `Deserializer` over `Node`: the typed model (`model.rs`) derives `Deserialize` with
//! `deny_unknown_fields`, and every error serde raises (unknown key, wrong type, missing
//! value, bad address) comes back carrying the origin of the key or value it is about. That
//! keeps the model plain Rust structs while users still get `file:line:col`.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::diag::{did_you_mean, Diagnostic, Redaction};
use crate::profile::source::Origin;
use crate::profile::value::{Node, Value};

/// Message of the error a secret reference raises when it is given a plain string. Fixed
/// text, so that it can never carry the secret itself.
pub const INLINE_SECRET: &str = "a secret is written inline";

/// What went wrong while reading typed settings.
#[derive(Debug)]
pub enum DeErrorKind {
    /// A key the model does not know.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys that are allowed there.
        expected: &'static [&'static str],
    },
    /// A required key is absent.
    Missing(&'static str),
    /// A value of the wrong TOML type.
    WrongType {
        /// What was expected.
        expected: String,
    },
    /// A secret value written in the profile.
    InlineSecret,
    /// Anything else (bad address, out-of-range number, ...).
    Invalid(String),
}

/// An error with the position it is about.
#[derive(Debug)]
pub struct DeError {
    /// What went wrong.
    pub kind: DeErrorKind,
    /// Where (filled in by the innermost value that saw the error).
    pub origin: Option<Origin>,
    /// The type the value had, for wrong-type errors.
    found: Option<&'static str>,
}

impl DeError {
    fn new(kind: DeErrorKind) -> Self {
        DeError {
            kind,
            origin: None,
            found: None,
        }
    }

    fn located(mut self, origin: &Origin, found: &'static str) -> Self {
        if self.origin.is_none() {
            self.origin = Some(origin.clone());
            if matches!(self.kind, DeErrorKind::WrongType { .. }) {
                self.found = Some(found);
            }
        }
        self
    }

    /// Name the offending value in messages that do not already (e.g. std's "invalid IPv4
    /// address syntax"). Only scalars: a table or array is shown by the caret instead.
    fn with_value(mut self, node: &Node) -> Self {
        if let DeErrorKind::Invalid(message) = &mut self.kind {
            let summary = node.summary();
            let scalar = !matches!(node.value, Value::Table(_) | Value::Array(_));
            if scalar && self.origin.is_none() && !message.contains(summary.trim_matches('"')) {
                message.push_str(&format!(": {summary}"));
            }
        }
        self
    }

    /// A diagnostic for the user. `section` names the table being read, for missing keys.
    pub fn into_diagnostic(self) -> Diagnostic {
        let diagnostic = match &self.kind {
            DeErrorKind::UnknownKey { key, expected } => {
                let mut diagnostic = Diagnostic::error("unknown-key", format!("unknown key `{key}`"));
                diagnostic = match did_you_mean(key, expected.iter().copied()) {
                    Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
                    None if expected.is_empty() => diagnostic.hint("no keys are allowed here"),
                    None => diagnostic.hint(format!("allowed keys here: {}", expected.join(", "))),
                };
                diagnostic
            }
            DeErrorKind::Missing(field) => Diagnostic::error("missing-value", format!("missing required key `{field}` in this table"))
                .hint(format!("add `{field} = ...`")),
            DeErrorKind::WrongType { expected } => Diagnostic::error(
                "wrong-type",
                format!("wrong type: expected {expected}, found {}", self.found.unwrap_or("another type")),
            ),
            DeErrorKind::InlineSecret => Diagnostic::error("inline-secret", INLINE_SECRET)
                .redact(Redaction::Span)
                .hint("secrets never sit in a profile: write `{ secret = \"NAME\" }` and give the value in a secrets file (`--secrets FILE`) or as KILN_SECRET_NAME in the environment"),
            DeErrorKind::Invalid(message) => Diagnostic::error("invalid-value", message.clone()),
        };
        match &self.origin {
            Some(origin) => diagnostic.at(origin),
            None => diagnostic,
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeErrorKind::UnknownKey { key, .. } => write!(formatter, "unknown key `{key}`"),
            DeErrorKind::Missing(field) => write!(formatter, "missing key `{field}`"),
            DeErrorKind::WrongType { expected } => write!(formatter, "expected {expected}"),
            DeErrorKind::InlineSecret => formatter.write_str(INLINE_SECRET),
            DeErrorKind::Invalid(message) => formatter.write_str(message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        let message = message.to_string();
        if message == INLINE_SECRET {
            DeError::new(DeErrorKind::InlineSecret)
        } else {
            DeError::new(DeErrorKind::Invalid(message))
        }
    }

    fn invalid_type(_unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        // The found type comes from the node (`located`), never from the value: a wrong-type
        // error on a secret-bearing key must not echo the value.
        DeError::new(DeErrorKind::WrongType {
            expected: expected.to_string(),
        })
    }

    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        DeError::new(DeErrorKind::Invalid(format!(
            "invalid value {unexpected}: expected {expected}"
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!(
            "unknown value `{variant}`: expected one of {}",
            quoted_list(expected)
        );
        if let Some(suggestion) = did_you_mean(variant, expected.iter().copied()) {
            message.push_str(&format!(" (did you mean `{suggestion}`?)"));
        }
        DeError::new(DeErrorKind::Invalid(message))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(DeErrorKind::UnknownKey {
            key: field.to_string(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(DeErrorKind::Missing(field))
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Read typed settings of type `T` from a tree.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, Diagnostic> {
    T::deserialize(NodeDeserializer { node }).map_err(DeError::into_diagnostic)
}

/// A serde deserializer over one node.
pub struct NodeDeserializer<'de> {
    node: &'de Node,
}

impl<'de> NodeDeserializer<'de> {
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|error| {
            error
                .with_value(self.node)
                .located(&self.node.origin, self.node.type_name())
        })
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::String(text) | Value::Datetime(text) => visitor.visit_borrowed_str(text),
            Value::Integer(number) => visitor.visit_i64(*number),
            Value::Float(number) => visitor.visit_f64(*number),
            Value::Boolean(flag) => visitor.visit_bool(*flag),
            Value::Array(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            Value::Table(table) => visitor.visit_map(MapAccess {
                entries: table.iter(),
                pending: None,
            }),
        };
        self.locate(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::String(text) => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Other("non-string"),
                &"a string",
            )),
        };
        self.locate(result)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDeserializer { node }).map(Some),
            None => Ok(None),
        }
    }
}

struct MapAccess<'de> {
    entries: indexmap::map::Iter<'de, String, crate::profile::value::Entry>,
    pending: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, entry)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(&entry.node);
        let key_deserializer: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(key);
        seed.deserialize(key_deserializer)
            .map(Some)
            .map_err(|error| error.located(&entry.key_origin, "a key"))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .pending
            .take()
            .expect("serde calls next_value_seed only after next_key_seed returned a key");
        seed.deserialize(NodeDeserializer { node })
    }
}
