//! The `capacity-auction` command line.

mod scenario;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A market for shares of machine capacity over time.
#[derive(Debug, Parser)]
#[command(name = "capacity-auction", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scenario files: a market, steps, and what must happen.
    Scenario {
        #[command(subcommand)]
        command: scenario::Command,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scenario { command } => scenario::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
