//! The command line: clap types live here and nowhere else.
//!
//! Each subcommand's arguments become a plain settings struct for `commands`, so the
//! pipeline never sees clap. Exit codes: 0 ok, 1 a finding or failed check, 2 usage or
//! internal error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands::{self, CommandError, EvalSettings, Globals, RenderSettings};

/// kiln: declarative, reproducible, air-gapped node images for MicroK8s GPU clusters.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// Profile directory (holding cluster.toml) or the cluster file itself.
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "KILN_PROFILE",
        default_value = "."
    )]
    profile: PathBuf,

    /// Secrets file (TOML: NAME = "value"); KILN_SECRET_<NAME> variables override it.
    #[arg(long, global = true, env = "KILN_SECRETS", hide_env_values = true)]
    secrets: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the merged profile (every node's layers applied, defaults filled in).
    Eval(EvalArgs),
    /// Render every configuration file of the chosen nodes into a directory.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Print only this node's merged settings.
    #[arg(long)]
    node: Option<String>,
    /// Print JSON instead of TOML.
    #[arg(long)]
    json: bool,
    /// Name the file:line that set PATH (e.g. `nodes.gpu1.gpu.driver`) and what it overrode.
    #[arg(long, value_name = "PATH")]
    explain: Option<String>,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// Render this node (repeatable).
    #[arg(long, required_unless_present = "all")]
    node: Vec<String>,
    /// Render every node.
    #[arg(long, conflicts_with = "node")]
    all: bool,
    /// Output directory; one sub-directory per node is written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Cli {
    fn run(self) -> Result<(), CommandError> {
        let globals = Globals {
            profile: self.profile,
            secrets: self.secrets,
        };
        match self.command {
            Command::Eval(args) => commands::eval::run(
                &globals,
                &EvalSettings {
                    node: args.node,
                    json: args.json,
                    explain: args.explain,
                },
            ),
            Command::Render(args) => commands::render::run(
                &globals,
                &RenderSettings {
                    nodes: if args.all { Vec::new() } else { args.node },
                    out: args.out,
                },
            ),
        }
    }
}

/// Parse the command line, run, and turn the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(error.exit_code())
        }
    }
}
