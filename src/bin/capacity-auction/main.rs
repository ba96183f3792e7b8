//! The `capacity-auction` command line.

mod bench;
mod charts;
#[cfg(feature = "nats")]
mod load;
mod scenario;
#[cfg(feature = "nats")]
mod serve;
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
    /// Measures intake and each clearing phase on this machine (ns per bid, memory per bid).
    Bench(bench::Bench),
    /// Scenario files: a market, steps, and what must happen.
    Scenario {
        #[command(subcommand)]
        command: scenario::Command,
    },
    /// Serves a market over NATS until interrupted (feature `nats`).
    #[cfg(feature = "nats")]
    Serve(serve::Serve),
    /// Drives a served market open-loop and prints throughput and latency (feature `nats`).
    #[cfg(feature = "nats")]
    Load(load::Load),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Scenario { command } => scenario::run(command),
        #[cfg(feature = "nats")]
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "nats")]
        Command::Load(args) => load::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
