//! `kiln build`: lint first (an error-level finding stops it before any work), then the
//! outputs, as store steps linked from `out/<cluster>/`.

use std::path::{Path, PathBuf};

use crate::build::archive::Compression;
use crate::build::bundle::{self, BundleOptions};
use crate::commands::lint::findings;
use crate::commands::store::{open_store, LOCK_TIMEOUT};
use crate::commands::{CommandError, Globals};
use crate::diag::Severity;
use crate::lint::output;
use crate::lock::file::{LockFile, LOCK_FILE};
use crate::lock::{requested, require_locked};
use crate::profile::load::cluster_path;
use crate::render::render_template;

/// `kiln build bundle` settings.
#[derive(Debug)]
pub struct BuildSettings {
    /// Compression of the bundle.
    pub compression: Compression,
    /// Carry the base OS's .debs in the bundle.
    pub include_debs: bool,
    /// Where `<cluster>/` output links go.
    pub out: PathBuf,
}

/// Point `link` at `target`, replacing an older link.
fn link(target: &Path, link: &Path) -> Result<(), CommandError> {
    if let Some(parent) = link.parent() {
        fs_err::create_dir_all(parent)?;
    }
    if link.symlink_metadata().is_ok() {
        fs_err::remove_file(link)?;
    }
    // An absolute target: the link works from wherever it is read.
    let target = fs_err::canonicalize(target)?;
    std::os::unix::fs::symlink(target, link)?;
    Ok(())
}

/// Run `kiln build bundle`.
pub fn bundle(globals: &Globals, settings: &BuildSettings) -> Result<(), CommandError> {
    // Lint before anything else: a profile with an error-level finding builds nothing.
    let (cluster, findings) = findings(globals)?;
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprint!("{}", output::human(&findings));
        return Err(CommandError::Failed(format!(
            "kiln build stops before doing any work: {errors} error-level lint finding(s) (`kiln lint` lists them)"
        )));
    }
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    if !lock_path.exists() {
        return Err(CommandError::Failed(format!(
            "{} does not exist: run `kiln lock`, then `kiln fetch`",
            lock_path.display()
        )));
    }
    let lock_text = fs_err::read_to_string(&lock_path)?;
    let lock = LockFile::read(&lock_path)?;
    // A build always follows the lock: a profile that asks for something else stops here.
    require_locked(&requested(&cluster)?, &lock, &lock_path)?;
    let store = open_store(globals)?;
    let _store_lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let install_script = |data: &serde_json::Value| {
        render_template(&cluster, "bundle/install.sh", data)
            .map_err(|findings| findings.to_string())
    };
    let report = bundle::build(
        &cluster,
        &lock,
        &lock_text,
        &store,
        BundleOptions {
            compression: settings.compression,
            include_debs: settings.include_debs || cluster.settings.cluster.bundle_debs,
        },
        &install_script,
    )
    .map_err(|error| CommandError::Failed(error.to_string()))?;
    let out = settings
        .out
        .join(&cluster.settings.cluster.name)
        .join(report.path.file_name().expect("bundle files have names"));
    link(&report.path, &out)?;
    if report.reused {
        eprintln!(
            "bundle: nothing changed, reusing step {} ({} members, sha256 {})",
            &report.key[..16],
            report.members,
            report.sha256
        );
    } else {
        eprintln!(
            "bundle: built step {} ({} members, {} bytes, sha256 {})",
            &report.key[..16],
            report.members,
            report.size,
            report.sha256
        );
    }
    eprintln!("{} -> {}", out.display(), report.path.display());
    Ok(())
}
