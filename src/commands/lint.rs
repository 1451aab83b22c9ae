//! `kiln lint`: every finding, as a table, JSON or SARIF.

use crate::commands::{print_out, CommandError, Globals};
use crate::lint::{lint, output, Context, Finding};
use crate::lock::file::{LockFile, LOCK_FILE};
use crate::profile::load::cluster_path;
use crate::profile::secrets::Secrets;
use crate::profile::{load_valid, ValidCluster};
use crate::render::{context::secret_references, render};

/// How `kiln lint` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Each finding with its source line, caret and hint.
    Human,
    /// One aligned line per finding.
    Table,
    /// JSON.
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

/// Lint a profile: the findings, or an error if the profile does not even validate.
pub fn findings(globals: &Globals) -> Result<(ValidCluster, Vec<Finding>), CommandError> {
    let cluster = load_valid(&globals.profile)?;
    let supplied = Secrets::load(globals.secrets.as_deref(), std::env::vars())?;
    let names = secret_references(&cluster)
        .into_iter()
        .map(|(reference, _)| reference.name);
    let rendered = render(&cluster, &supplied.with_placeholders(names))?;
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    let lock = if lock_path.exists() {
        Some(LockFile::read(&lock_path)?)
    } else {
        None
    };
    // The store is only read (charts' values schemas): one that does not exist is not
    // created, so linting never writes anything.
    let root = match &globals.store {
        Some(root) => Some(root.clone()),
        None => crate::store::Store::default_root(|key| std::env::var(key).ok()),
    };
    let store = root
        .filter(|root| root.is_dir())
        .and_then(|root| crate::store::Store::open(&root).ok());
    let context = Context {
        cluster: &cluster,
        rendered: &rendered,
        secrets: &supplied,
        lock: lock.as_ref(),
        store: store.as_ref(),
    };
    let findings = lint(&context);
    Ok((cluster, findings))
}

/// Run `kiln lint`: exit 1 when any finding is an error.
pub fn run(globals: &Globals, format: Format) -> Result<(), CommandError> {
    let (_, findings) = findings(globals)?;
    let text = match format {
        Format::Human if findings.is_empty() => "no findings\n".to_string(),
        Format::Human => output::human(&findings),
        Format::Table => output::table(&findings),
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&output::json(&findings)).expect("JSON")
        ),
        Format::Sarif => format!(
            "{}\n",
            serde_json::to_string_pretty(&output::sarif(&findings)).expect("JSON")
        ),
    };
    print_out(&text)?;
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == crate::diag::Severity::Error)
        .count();
    if errors > 0 {
        Err(CommandError::Failed(format!(
            "{errors} error-level finding(s)"
        )))
    } else {
        Ok(())
    }
}
