//! The `capacity-auction` command line.

mod bench;
mod charts;
#[cfg(feature = "nats")]
mod load;
#[cfg(feature = "nats")]
mod recover;
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
    /// Drives a served market and prints throughput and latency (feature `nats`).
    #[cfg(feature = "nats")]
    Load(load::Load),
    /// Reads a served market back from its journal and reports how long it took (feature `nats`).
    #[cfg(feature = "nats")]
    Recover(recover::Recover),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // What the library says (recovery, takeovers, intake stopping) goes to standard error, one
    // plain line each.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .init();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Scenario { command } => scenario::run(command),
        #[cfg(feature = "nats")]
        Command::Serve(args) => serve::run(args),
        #[cfg(feature = "nats")]
        Command::Load(args) => load::run(args),
        #[cfg(feature = "nats")]
        Command::Recover(args) => recover::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
