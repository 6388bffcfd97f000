//! `ringraft`: the command-line face of the engine.
//!
//! Each subcommand lives in its own module; `main` only parses and dispatches.

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "ringraft",
    version,
    about = "A thread-per-core io_uring Raft replication engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => {
            Cli::command().print_help().expect("stdout is writable");
            ExitCode::SUCCESS
        }
        Some(command) => match command {},
    }
}
