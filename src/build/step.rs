//! Build steps: results in the store, keyed by the hash of everything they are made from.
//!
//! A step's key is the sha256 of the canonical JSON of its kind, its version, its
//! parameters, the digests (or keys) of its inputs and the versions of the external tools
//! it runs. A step whose key is already in `steps/<key>-<name>/` is reused, not rebuilt;
//! any change to an input gives another key. A step is built in a private directory
//! under the store's `tmp/` and renamed into `steps/` only when complete, with a
//! `step.json` that records its inputs and the sha256 of each output file: a build killed
//! at any moment leaves no half-made step behind.
//!
//! `kiln check` runs the same steps with the cache turned off, into a scratch `steps/`
//! directory, and compares.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::build::bundle::canonical;
use crate::build::BuildError;

/// The file in every step directory that says what it was made from and what it holds.
pub const STEP_FILE: &str = "step.json";

/// What happened to a step in this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Its key was in the store: nothing was done.
    Reused,
    /// It was built.
    Built,
}

impl fmt::Display for Action {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Action::Reused => "reuse",
            Action::Built => "built",
        })
    }
}

/// One line of the step report.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// The step kind (`rootfs`, `node`, `disk`).
    pub kind: String,
    /// Its name in the store (`rootfs`, `node-demo-server`, ...).
    pub name: String,
    /// Its key.
    pub key: String,
    /// Reused or built.
    pub action: Action,
    /// Seconds it took (0 when reused).
    pub seconds: f64,
    /// The step's directory.
    pub dir: PathBuf,
}

/// An output file of a step, as `step.json` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// sha256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// `step.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step kind.
    pub kind: String,
    /// The key.
    pub key: String,
    /// What the key was computed from.
    pub inputs: Value,
    /// Output files by name.
    pub outputs: std::collections::BTreeMap<String, OutputFile>,
}

/// A finished step: where its outputs are.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// `steps/<key>-<name>/`.
    pub dir: PathBuf,
    /// The key.
    pub key: String,
    /// Its record.
    pub record: StepRecord,
}

impl StepOutput {
    /// The path of an output file.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The sha256 of the canonical JSON of `inputs`: a step key.
pub fn key_of(inputs: &Value) -> String {
    let text = serde_json::to_string(&canonical(inputs)).expect("JSON values serialize");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// sha256 and size of a file, read in 1 MiB chunks.
pub fn hash_file(path: &Path) -> Result<OutputFile, BuildError> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(OutputFile {
        sha256: format!("{:x}", hasher.finalize()),
        size,
    })
}

/// Runs steps against one `steps/` directory, reusing or building, and keeps the report.
pub struct Steps {
    steps_dir: PathBuf,
    tmp_dir: PathBuf,
    work_root: PathBuf,
    use_cache: bool,
    quiet: bool,
    reports: RefCell<Vec<StepReport>>,
}

impl Steps {
    /// Steps in `steps_dir`, built in `tmp_dir` (on the same file system, so finished
    /// steps are renamed into place), with scratch trees under `work_root`.
    pub fn new(steps_dir: PathBuf, tmp_dir: PathBuf, work_root: PathBuf) -> Steps {
        Steps {
            steps_dir,
            tmp_dir,
            work_root,
            use_cache: true,
            quiet: false,
            reports: RefCell::new(Vec::new()),
        }
    }

    /// Build every step even when its key is in `steps/` (what `kiln check` does, into a
    /// scratch `steps/`).
    pub fn without_cache(mut self) -> Steps {
        self.use_cache = false;
        self
    }

    /// Print nothing while running.
    pub fn quiet(mut self, quiet: bool) -> Steps {
        self.quiet = quiet;
        self
    }

    /// The report so far.
    pub fn reports(&self) -> Vec<StepReport> {
        self.reports.borrow().clone()
    }

    /// The directory a step with this key and name has (or would have).
    pub fn dir_of(&self, key: &str, name: &str) -> PathBuf {
        self.steps_dir.join(format!("{key}-{name}"))
    }

    /// Reuse the step `name` of `kind` whose key is computed from `inputs`, or build it:
    /// `build(out, work, key)` writes its output files into `out` and may use `work` for
    /// scratch; both are removed or renamed afterwards.
    pub fn run(
        &self,
        kind: &str,
        name: &str,
        inputs: Value,
        build: impl FnOnce(&Path, &Path, &str) -> Result<(), BuildError>,
    ) -> Result<StepOutput, BuildError> {
        let inputs = canonical(&json!({ "kind": kind, "inputs": inputs }));
        let key = key_of(&inputs);
        let dir = self.dir_of(&key, name);
        let short = &key[..12];
        if self.use_cache {
            if let Some(record) = read_record(&dir) {
                if !self.quiet {
                    eprintln!("  {name:<24} reuse  {short}");
                }
                self.reports.borrow_mut().push(StepReport {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    key: key.clone(),
                    action: Action::Reused,
                    seconds: 0.0,
                    dir: dir.clone(),
                });
                return Ok(StepOutput { dir, key, record });
            }
        }
        if !self.quiet {
            eprintln!("  {name:<24} build  {short} ...");
        }
        let started = Instant::now();
        let tag = format!("{key}-{name}.{}", std::process::id());
        let partial = self.tmp_dir.join(format!("step-{tag}"));
        let work = self.work_root.join(format!("kiln-work-{tag}"));
        let _ = remove_tree(&partial);
        let _ = remove_tree(&work);
        fs_err::create_dir_all(&partial)?;
        fs_err::create_dir_all(&work)?;
        let result = build(&partial, &work, &key);
        let _ = remove_tree(&work);
        if let Err(error) = result {
            let _ = remove_tree(&partial);
            return Err(error);
        }
        let mut outputs = std::collections::BTreeMap::new();
        record_files(&partial, "", &mut outputs)?;
        let record = StepRecord {
            kind: kind.to_string(),
            key: key.clone(),
            inputs,
            outputs,
        };
        fs_err::write(
            partial.join(STEP_FILE),
            format!(
                "{}\n",
                serde_json::to_string_pretty(&record).expect("JSON values serialize")
            ),
        )?;
        fs_err::create_dir_all(&self.steps_dir)?;
        if self.use_cache {
            if let Some(record) = read_record(&dir) {
                // Another kiln finished the same step meanwhile: same key, same bytes.
                remove_tree(&partial)?;
                self.reports.borrow_mut().push(StepReport {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    key: key.clone(),
                    action: Action::Built,
                    seconds: started.elapsed().as_secs_f64(),
                    dir: dir.clone(),
                });
                return Ok(StepOutput { dir, key, record });
            }
        }
        if dir.exists() {
            // Rebuilt without the cache, or left incomplete by an interrupted build.
            remove_tree(&dir)?;
        }
        fs_err::rename(&partial, &dir)?;
        let seconds = started.elapsed().as_secs_f64();
        if !self.quiet {
            eprintln!("  {name:<24} built  {short} in {seconds:.1} s");
        }
        self.reports.borrow_mut().push(StepReport {
            kind: kind.to_string(),
            name: name.to_string(),
            key: key.clone(),
            action: Action::Built,
            seconds,
            dir: dir.clone(),
        });
        Ok(StepOutput { dir, key, record })
    }
}

/// Hash every regular file under `dir` into `outputs`, keyed by its path relative to the
/// step's directory (`/`-separated; a tree step's files are in subdirectories).
fn record_files(
    dir: &Path,
    prefix: &str,
    outputs: &mut std::collections::BTreeMap<String, OutputFile>,
) -> Result<(), BuildError> {
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_file() {
            outputs.insert(name, hash_file(&entry.path())?);
        } else if kind.is_dir() {
            record_files(&entry.path(), &format!("{name}/"), outputs)?;
        }
    }
    Ok(())
}

/// The record of a complete step, if `dir` holds one.
pub fn read_record(dir: &Path) -> Option<StepRecord> {
    let text = fs_err::read_to_string(dir.join(STEP_FILE)).ok()?;
    let record: StepRecord = serde_json::from_str(&text).ok()?;
    record
        .outputs
        .iter()
        .all(|(name, output)| {
            std::fs::metadata(dir.join(name)).is_ok_and(|meta| meta.len() == output.size)
        })
        .then_some(record)
}

/// Remove a directory tree, making read-only directories writable first.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            let status = std::process::Command::new("chmod")
                .args(["-R", "u+rwX"])
                .arg(path)
                .status()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "could not make {} writable to remove it",
                    path.display()
                )));
            }
            std::fs::remove_dir_all(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_object_key_order_but_not_values() {
        let a = key_of(&json!({ "a": 1, "b": [1, 2] }));
        let b = key_of(&json!({ "b": [1, 2], "a": 1 }));
        let c = key_of(&json!({ "b": [2, 1], "a": 1 }));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_step_is_built_once_then_reused_and_a_failed_build_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let steps = Steps::new(
            root.path().join("steps"),
            root.path().join("tmp"),
            root.path().join("work"),
        )
        .quiet(true);
        fs_err::create_dir_all(root.path().join("tmp")).unwrap();
        let mut calls = 0;
        for _ in 0..2 {
            let output = steps
                .run("test", "thing", json!({ "x": 1 }), |out, _, _| {
                    calls += 1;
                    fs_err::write(out.join("a.txt"), b"hello")?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(output.record.outputs["a.txt"].size, 5);
        }
        assert_eq!(calls, 1);
        let actions: Vec<Action> = steps.reports().iter().map(|r| r.action).collect();
        assert_eq!(actions, vec![Action::Built, Action::Reused]);
        let failed = steps.run("test", "broken", json!({ "x": 2 }), |out, _, _| {
            fs_err::write(out.join("half"), b"...")?;
            Err(BuildError::Failed("planned".into()))
        });
        assert!(failed.is_err());
        let left: Vec<_> = fs_err::read_dir(root.path().join("steps"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "only the finished step: {left:?}");
        assert_eq!(
            fs_err::read_dir(root.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
