//! Secrets: named values supplied at build time, never written in a profile.
//!
//! A profile refers to a secret as `{ secret = "NAME" }`. The value comes from the
//! environment (`KILN_SECRET_NAME`, upper-cased, `-` as `_`) or a secrets file (TOML,
//! `NAME = "value"`) given with `--secrets`; the environment wins. Values are held only here
//! and in rendered files that are readable by root alone; no message prints one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::diag::{Diagnostic, Redaction};
use crate::profile::model::{is_secret_name, SecretRef};
use crate::profile::source::Origin;

/// The prefix of environment variables that carry secrets.
pub const ENV_PREFIX: &str = "KILN_SECRET_";

/// Secret values by name.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

// Never print values, even in debug output.
impl fmt::Debug for Secrets {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_set().entries(self.values.keys()).finish()
    }
}

/// The environment variable that carries a secret.
pub fn env_name(name: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl Secrets {
    /// Secrets from an optional file and the environment's `KILN_SECRET_*` variables.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Diagnostic> {
        let mut values = BTreeMap::new();
        if let Some(path) = file {
            // Errors in a secrets file show positions only, never its lines.
            let (source, tree) = crate::profile::load::parse_file(path)
                .map_err(|error| error.redact(Redaction::Line))?;
            let table = tree.as_table().expect("a parsed TOML document is a table");
            for (name, entry) in table {
                let Some(value) = entry.node.as_str() else {
                    return Err(Diagnostic::error(
                        "wrong-type",
                        format!(
                            "secret `{name}` must be a string, found {}",
                            entry.node.type_name()
                        ),
                    )
                    .at(&entry.key_origin));
                };
                if !is_secret_name(name) {
                    return Err(Diagnostic::error(
                        "invalid-value",
                        format!("invalid secret name `{name}`"),
                    )
                    .at(&entry.key_origin)
                    .hint("use letters, digits, `-` and `_`"));
                }
                values.insert(name.clone(), value.to_string());
            }
            drop(source);
        }
        let environment: BTreeMap<String, String> = environment.into_iter().collect();
        // A secret named in the file or wanted later is looked up by its env name; collect all
        // KILN_SECRET_* now under their lower-case, dash form as well as any exact file name.
        for (variable, value) in &environment {
            if let Some(rest) = variable.strip_prefix(ENV_PREFIX) {
                if !rest.is_empty() {
                    values.insert(format!("env:{rest}"), value.clone());
                }
            }
        }
        Ok(Secrets { values })
    }

    /// The value of a secret, if supplied. The environment wins over the file.
    pub fn get(&self, name: &str) -> Option<&str> {
        let env_key = format!("env:{}", &env_name(name)[ENV_PREFIX.len()..]);
        self.values
            .get(&env_key)
            .or_else(|| self.values.get(name))
            .map(String::as_str)
    }

    /// These secrets, with a placeholder for every referenced one that is not supplied:
    /// what `kiln lint` renders with, so that it never needs the real values.
    pub fn with_placeholders(&self, names: impl IntoIterator<Item = String>) -> Secrets {
        let mut values = self.values.clone();
        for name in names {
            if self.get(&name).is_none() {
                values.insert(name.clone(), format!("kiln-lint-placeholder-for-{name}"));
            }
        }
        Secrets { values }
    }

    /// Set a secret's value (used for placeholders that are filled in later).
    pub fn insert(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_string(), value.to_string());
    }

    /// Every value that a rendered file might contain, to decide its permissions.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }

    /// Resolve every reference, or one error per missing secret naming it and where it is used.
    pub fn resolve_all(
        &self,
        references: impl IntoIterator<Item = (SecretRef, Origin)>,
    ) -> Result<BTreeMap<String, String>, Vec<Diagnostic>> {
        let mut resolved = BTreeMap::new();
        let mut missing: BTreeMap<String, Origin> = BTreeMap::new();
        for (reference, origin) in references {
            match self.get(&reference.name) {
                Some(value) => {
                    resolved.insert(reference.name.clone(), value.to_string());
                }
                None => {
                    missing.entry(reference.name.clone()).or_insert(origin);
                }
            }
        }
        if missing.is_empty() {
            return Ok(resolved);
        }
        Err(missing
            .into_iter()
            .map(|(name, origin)| {
                Diagnostic::error("missing-secret", format!("secret `{name}` is not supplied"))
                    .at(&origin)
                    .hint(format!(
                        "give it in the secrets file (--secrets FILE) as `{name} = \"...\"`, or set {} in the environment",
                        env_name(&name)
                    ))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_and_debug_hides_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        fs_err::write(&path, "join-token = \"from-file\"\noauth = \"o\"\n").unwrap();
        let secrets = Secrets::load(
            Some(&path),
            [("KILN_SECRET_JOIN_TOKEN".to_string(), "from-env".to_string())],
        )
        .unwrap();
        assert_eq!(secrets.get("join-token"), Some("from-env"));
        assert_eq!(secrets.get("oauth"), Some("o"));
        assert_eq!(secrets.get("absent"), None);
        let debug = format!("{secrets:?}");
        assert!(
            !debug.contains("from-env") && !debug.contains("from-file"),
            "{debug}"
        );
    }
}
