//! Thin glue between the CLI and the pipeline: one file per subcommand.

pub mod build;
pub mod bundle;
pub mod check;
pub mod eval;
pub mod fetch;
pub mod flash;
pub mod lint;
pub mod lock;
pub mod render;
pub mod serve;
pub mod store;
pub mod verify;

pub use eval::print_out;

use std::fmt;
use std::path::PathBuf;

use crate::diag::Findings;

/// Options every command takes.
#[derive(Debug)]
pub struct Globals {
    /// Profile directory or cluster file.
    pub profile: PathBuf,
    /// Secrets file.
    pub secrets: Option<PathBuf>,
    /// Store root, when given.
    pub store: Option<PathBuf>,
    /// Fail when the profile and kiln.lock disagree.
    pub locked: bool,
}

/// `kiln lock` settings.
#[derive(Debug)]
pub struct LockSettings {
    /// Entries to re-resolve.
    pub update: Vec<String>,
    /// Registry → URL rewrites.
    pub mirrors: Vec<(String, String)>,
}

/// `kiln fetch` settings.
#[derive(Debug)]
pub struct FetchSettings {
    /// Parallel downloads.
    pub jobs: usize,
    /// Never touch the network.
    pub offline: bool,
    /// JSON summary.
    pub json: bool,
    /// Registry (or `debian`) → URL rewrites.
    pub mirrors: Vec<(String, String)>,
}

/// `kiln eval` settings.
#[derive(Debug)]
pub struct EvalSettings {
    /// Only this node.
    pub node: Option<String>,
    /// JSON output.
    pub json: bool,
    /// Explain one path.
    pub explain: Option<String>,
}

/// `kiln render` settings.
#[derive(Debug)]
pub struct RenderSettings {
    /// Nodes to render; empty means all.
    pub nodes: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
}

/// How a command failed.
#[derive(Debug)]
pub enum CommandError {
    /// Findings about the user's input (exit 1).
    Findings(Findings),
    /// A check that failed, already explained (exit 1).
    Failed(String),
    /// Bad arguments (exit 2).
    Usage(String),
    /// Something else went wrong (exit 2).
    Internal(String),
}

impl CommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Findings(_) | CommandError::Failed(_) => 1,
            CommandError::Usage(_) | CommandError::Internal(_) => 2,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Findings(findings) => write!(formatter, "{findings}"),
            CommandError::Failed(message) => write!(formatter, "error: {message}"),
            CommandError::Usage(message) => write!(formatter, "error: {message}"),
            CommandError::Internal(message) => write!(formatter, "error: {message}"),
        }
    }
}

impl From<Findings> for CommandError {
    fn from(findings: Findings) -> Self {
        CommandError::Findings(findings)
    }
}

impl From<crate::diag::Diagnostic> for CommandError {
    fn from(diagnostic: crate::diag::Diagnostic) -> Self {
        CommandError::Findings(Findings(vec![diagnostic]))
    }
}

impl From<std::io::Error> for CommandError {
    fn from(error: std::io::Error) -> Self {
        CommandError::Internal(error.to_string())
    }
}
