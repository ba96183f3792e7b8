//! `capacity-auction scenario run PATH... [--events FILE]`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use capacity_auction::Scenario;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs scenario files (folders are searched for *.json) and prints a verdict for each.
    Run {
        /// Scenario files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Writes every event of every scenario to this file, one JSON object per line.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Runs each scenario end to end over the NATS server at URL (a service per scenario,
        /// under a namespace of its own) instead of in-process.
        #[cfg(feature = "nats")]
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
}

/// Where scenarios run.
enum Runner {
    InProcess,
    #[cfg(feature = "nats")]
    Nats(Box<tokio::runtime::Runtime>, async_nats::Client),
}

impl Runner {
    fn run(&self, scenario: &Scenario) -> capacity_auction::ScenarioReport {
        match self {
            Runner::InProcess => scenario.run(),
            #[cfg(feature = "nats")]
            Runner::Nats(runtime, nats) => {
                runtime.block_on(capacity_auction::bindings::nats::run_scenario(nats, scenario))
            }
        }
    }
}

pub(crate) fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let Command::Run {
        paths,
        events,
        #[cfg(feature = "nats")]
        nats,
    } = command;
    #[cfg(not(feature = "nats"))]
    let runner = Runner::InProcess;
    #[cfg(feature = "nats")]
    let runner = match nats {
        None => Runner::InProcess,
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let client = runtime.block_on(async_nats::connect(&url)).map_err(|e| format!("{url}: {e}"))?;
            Runner::Nats(Box::new(runtime), client)
        }
    };
    let mut sink = match &events {
        Some(path) => Some(BufWriter::new(File::create(path)?)),
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in Scenario::files(&paths)? {
        let report = match Scenario::load(&path) {
            Ok(scenario) => runner.run(&scenario),
            Err(e) => {
                failed += 1;
                writeln!(out, "FAIL {}: {e}", path.display())?;
                continue;
            }
        };
        if let Some(sink) = &mut sink {
            for e in &report.events {
                writeln!(sink, "{}", e.to_json())?;
            }
        }
        if report.passed() {
            passed += 1
        } else {
            failed += 1
        }
        writeln!(out, "{report}")?;
    }
    if let Some(mut sink) = sink {
        sink.flush()?;
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
