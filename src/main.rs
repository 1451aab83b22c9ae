//! The `kiln` binary: parse arguments, run, render an error once, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln::cli::main()
}
