//! The `capacity-auction` command line.

mod charts;
mod scenario;
mod simulate;

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
    /// Simulates a population of agents bidding over many cycles and writes prices, cycles,
    /// charts and a summary (the standard workload when run without flags).
    Simulate(simulate::Simulate),
    /// Scenario files: a market, steps, and what must happen.
    Scenario {
        #[command(subcommand)]
        command: scenario::Command,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
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
