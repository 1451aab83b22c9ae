//! Test harness: runs the real `kiln` binary in a temporary directory with its own store and
//! environment, like just's `Test` and uv's `TestContext`.

#![allow(dead_code)]

pub mod containerd;
pub mod fake_sysfs;
pub mod http_server;
pub mod qemu;
pub mod registry;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `profiles/` and `tests/fixtures/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A kiln invocation in a scratch directory.
pub struct Kiln {
    /// Scratch directory, removed on drop.
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// What a run produced.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error, with the scratch directory replaced by `[TEMP]`.
    pub stderr: String,
}

impl Kiln {
    /// A new invocation with an empty scratch directory.
    pub fn new() -> Self {
        Kiln {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_string()));
        self
    }

    /// Set an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Write a file (creating directories) below the scratch directory.
    pub fn file(self, path: &str, contents: &str) -> Self {
        let target = self.dir.path().join(path);
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::write(target, contents).unwrap();
        self
    }

    /// Copy a shipped profile (and the shared roles) into the scratch directory, so a test
    /// can change it; returns the profile's path there.
    pub fn copy_profile(&self, name: &str) -> PathBuf {
        for sub in [name, "roles"] {
            copy_dir(
                &repo().join("profiles").join(sub),
                &self.dir.path().join("profiles").join(sub),
            );
        }
        self.dir.path().join("profiles").join(name)
    }

    /// Path inside the scratch directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Run kiln in the scratch directory with `args` instead of the builder's arguments.
    pub fn run_with(&self, args: &[&str]) -> Run {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        self.run_args(&args)
    }

    /// Run kiln in the scratch directory.
    pub fn run(&self) -> Run {
        self.run_args(&self.args)
    }

    /// The kiln command with `args`, in the scratch directory and with its environment
    /// only, for a test that runs it another way (in the background, say).
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        command
    }

    fn run_args(&self, args: &[String]) -> Run {
        let output: Output = self.command(args).output().expect("kiln runs");
        let scrub = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes).replace(&self.dir.path().display().to_string(), "[TEMP]")
        };
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: scrub(&output.stdout),
            stderr: scrub(&output.stderr),
        }
    }
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file below `dir`, as sorted relative paths.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs_err::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Render every node of a shipped profile (with the test secrets for sai) into a new scratch
/// directory; returns the invocation (keeping the directory alive) and the output path.
pub fn render_profile(name: &str) -> (Kiln, PathBuf) {
    let kiln = Kiln::new();
    let profile = repo().join("profiles").join(name);
    let secrets = repo()
        .join("tests/fixtures")
        .join(format!("{name}-secrets.toml"));
    let mut args = vec!["--profile".to_string(), profile.display().to_string()];
    if secrets.exists() {
        args.extend(["--secrets".to_string(), secrets.display().to_string()]);
    }
    args.extend(["render", "--all", "--out", "out"].map(String::from));
    let kiln = kiln.args(args);
    let run = kiln.run();
    assert_eq!(run.code, 0, "render failed:\n{}", run.stderr);
    let out = kiln.path("out");
    (kiln, out)
}
