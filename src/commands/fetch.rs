//! `kiln fetch`: download what the lock names and the store lacks.

use std::path::Path;

use crate::commands::lock::{endpoints, sources};
use crate::commands::store::{open_store, LOCK_TIMEOUT};
use crate::commands::{print_out, CommandError, FetchSettings, Globals};
use crate::fetch::artifacts::{missing, run_tasks, Outcome, Task};
use crate::fetch::debian;
use crate::fetch::http::{FetchOptions, HttpClient};
use crate::lock::file::{LockFile, LOCK_FILE};
use crate::lock::{requested, require_locked};
use crate::profile::load::cluster_path;
use crate::profile::load_valid;
use crate::report::FetchProgress;

/// Run `kiln fetch`.
pub fn run(globals: &Globals, settings: &FetchSettings) -> Result<(), CommandError> {
    let lock_path = cluster_path(&globals.profile).with_file_name(LOCK_FILE);
    if !lock_path.exists() {
        return Err(CommandError::Failed(format!(
            "{} does not exist: run `kiln lock` first",
            lock_path.display()
        )));
    }
    let lock = LockFile::read(&lock_path)?;
    let cluster = load_valid(&globals.profile)?;
    if globals.locked {
        require_locked(&requested(&cluster)?, &lock, &lock_path)?;
    }
    let mirrors = sources(&cluster, &settings.mirrors);
    let store = open_store(globals)?;
    let _store_lock = store
        .lock_shared(LOCK_TIMEOUT)
        .map_err(|error| CommandError::Internal(error.to_string()))?;
    let apt_sources = debian::host_sources(Path::new("/etc/apt"));
    let deb_archive = |suite: &str| deb_archive(suite, &mirrors, &apt_sources);
    let tasks = missing(&lock, &store, &deb_archive)
        .map_err(|error| CommandError::Failed(error.to_string()))?;
    if settings.offline {
        return report_offline(&tasks, settings.json);
    }
    if tasks.is_empty() {
        return finish(&[], settings.json, 0);
    }
    eprintln!(
        "fetching {} artifact(s) with {} job(s)",
        tasks.len(),
        settings.jobs
    );
    let http = HttpClient::new(FetchOptions::default());
    let endpoints = endpoints(&mirrors);
    let total = tasks.len();
    let known_bytes = tasks
        .iter()
        .map(|task| match task {
            Task::Blob { size, .. } => *size,
            Task::Image(_) => 0,
        })
        .sum();
    let progress = FetchProgress::new(total, known_bytes);
    let outcomes = run_tasks(tasks, settings.jobs, &http, &endpoints, &store, &progress);
    drop(progress);
    finish(&outcomes, settings.json, total)
}

/// Where a suite's .debs come from: `--mirror SUITE=URL`, else `--mirror debian=URL` (or
/// `ubuntu=`) for every suite, else the host's apt sources.
fn deb_archive(
    suite: &str,
    mirrors: &[(String, String)],
    sources: &[debian::AptSource],
) -> Option<String> {
    let mirror = mirrors
        .iter()
        .find(|(name, _)| name == suite)
        .or_else(|| {
            mirrors
                .iter()
                .find(|(name, _)| name == "debian" || name == "ubuntu")
        })
        .map(|(_, url)| url.as_str());
    debian::archive_url(suite, mirror, sources).ok()
}

fn report_offline(tasks: &[Task], json: bool) -> Result<(), CommandError> {
    let labels: Vec<&str> = tasks.iter().map(Task::label).collect();
    if json {
        let text = serde_json::to_string_pretty(
            &serde_json::json!({ "offline": true, "missing": labels }),
        )
        .expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    } else {
        for label in &labels {
            eprintln!("missing {label}");
        }
    }
    if labels.is_empty() {
        eprintln!("the store has everything the lock names");
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "--offline: {} artifact(s) are not in the store; run `kiln fetch` where the network is reachable",
            labels.len()
        )))
    }
}

fn finish(outcomes: &[Outcome], json: bool, total: usize) -> Result<(), CommandError> {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_some())
        .collect();
    let bytes: u64 = outcomes.iter().map(|outcome| outcome.bytes).sum();
    if json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "fetched": outcomes.len() - failed.len(),
            "failed": failed.iter().map(|outcome| serde_json::json!({ "artifact": outcome.label, "error": outcome.error })).collect::<Vec<_>>(),
            "bytes": bytes,
        }))
        .expect("JSON serializes");
        print_out(&format!("{text}\n"))?;
    }
    if total == 0 {
        eprintln!("the store has everything the lock names");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Failed(format!(
            "{} of {total} artifact(s) failed; nothing unverified was stored, and a re-run resumes",
            failed.len()
        )))
    }
}
