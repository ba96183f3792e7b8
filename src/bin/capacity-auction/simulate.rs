//! `capacity-auction simulate`: a population bidding over thousands of cycles, with CSVs,
//! charts and a summary.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use capacity_auction::{Pattern, PricingRule, PriorityRule, SimConfig, Simulation, StrategyMix, Summary};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::charts;

/// Flags of `simulate`; each overrides the configuration file.
#[derive(Debug, Args)]
pub(crate) struct Simulate {
    /// A TOML or JSON file of simulation keys (see README).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Agents in the population.
    #[arg(long)]
    agents: Option<usize>,
    /// Clearing cycles to run.
    #[arg(long)]
    cycles: Option<u64>,
    /// The seed everything random follows from.
    #[arg(long)]
    seed: Option<u64>,
    /// Strategy shares, e.g. `truthful=0.5,shading=0.2,adaptive=0.2,bursty=0.1`.
    #[arg(long, value_name = "MIX")]
    strategies: Option<String>,
    /// Demand patterns, e.g. `diurnal,spike,outage` or `steady`.
    #[arg(long, value_name = "PATTERNS")]
    pattern: Option<String>,
    /// Pricing rule: pay_as_bid, critical_value, uniform.
    #[arg(long)]
    pricing: Option<String>,
    /// Priority rule: value, density, los.
    #[arg(long)]
    priority: Option<String>,
    /// The run's name; output goes to `<out>/<name>/`.
    #[arg(long)]
    name: Option<String>,
    /// Where runs are written.
    #[arg(long, default_value = "out", value_name = "DIR")]
    out: PathBuf,
    /// Runs the same seed under several pricing rules, e.g. `pricing=pay_as_bid,critical_value,uniform`.
    #[arg(long, value_name = "pricing=RULES")]
    compare: Option<String>,
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, word: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(word.trim().to_owned()))
        .map_err(|_| format!("`{word}` is not a {what}"))
}

impl Simulate {
    fn config(&self) -> Result<SimConfig, Box<dyn std::error::Error>> {
        let mut c = match &self.config {
            None => SimConfig::default(),
            Some(path) => SimConfig::from_file(path)?,
        };
        if let Some(v) = self.agents {
            c.agents = v;
        }
        if let Some(v) = self.cycles {
            c.cycles = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = &self.name {
            c.name = v.clone();
        }
        if let Some(mix) = &self.strategies {
            c.strategies = StrategyMix { truthful: 0.0, shading: 0.0, adaptive: 0.0, bursty: 0.0 };
            for part in mix.split(',') {
                let (k, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not strategy=share"))?;
                let v: f64 = v.trim().parse().map_err(|_| format!("`{v}` is not a share"))?;
                match k.trim() {
                    "truthful" => c.strategies.truthful = v,
                    "shading" => c.strategies.shading = v,
                    "adaptive" => c.strategies.adaptive = v,
                    "bursty" => c.strategies.bursty = v,
                    other => return Err(format!("no strategy `{other}`").into()),
                }
            }
        }
        if let Some(p) = &self.pattern {
            c.patterns = p.split(',').map(|w| parse::<Pattern>("pattern", w)).collect::<Result<_, _>>()?;
        }
        if let Some(p) = &self.pricing {
            c.market.pricing = parse::<PricingRule>("pricing rule", p)?;
        }
        if let Some(p) = &self.priority {
            c.market.priority = parse::<PriorityRule>("priority rule", p)?;
        }
        Ok(c)
    }
}

/// Runs one simulation with a progress bar when stderr is a terminal.
fn run_one(config: &SimConfig, label: &str) -> Result<(Simulation, f64), Box<dyn std::error::Error>> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(config.cycles);
        bar.set_style(
            ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} cycles {per_sec} eta {eta}")?
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let sim = config.run(|c| {
        if c % 16 == 0 {
            bar.set_position(c);
        }
    })?;
    bar.finish_and_clear();
    Ok((sim, started.elapsed().as_secs_f64()))
}

fn write_run(sim: &Simulation, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let mut prices = BufWriter::new(File::create(dir.join("prices.csv"))?);
    sim.write_prices(&mut prices)?;
    prices.flush()?;
    let mut cycles = BufWriter::new(File::create(dir.join("cycles.csv"))?);
    sim.write_cycles(&mut cycles)?;
    cycles.flush()?;
    charts::prices(sim, &dir.join("prices.png"))?;
    charts::welfare(sim, &dir.join("welfare.png"))?;
    Ok(())
}

pub(crate) fn run(args: Simulate) -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
    let config = args.config()?;
    let dir = args.out.join(&config.name);
    match &args.compare {
        None => {
            let (sim, seconds) = run_one(&config, &config.name)?;
            write_run(&sim, &dir)?;
            let summary = sim.summary();
            println!(
                "{} agents, {} cycles, seed {}, {:?} pricing, {:?} priority: {:.2} s ({:.0} cycles/s)",
                config.agents,
                config.cycles,
                config.seed,
                config.market.pricing,
                config.market.priority,
                seconds,
                config.cycles as f64 / seconds
            );
            print!("{}", summary.table());
            println!("wrote {}/{{prices.csv,cycles.csv,prices.png,welfare.png}}", dir.display());
        }
        Some(spec) => {
            let rules = spec.strip_prefix("pricing=").ok_or("--compare takes pricing=RULE,RULE,...")?;
            let mut rows: Vec<(String, Summary)> = Vec::new();
            for word in rules.split(',') {
                let rule = parse::<PricingRule>("pricing rule", word)?;
                let mut c = config.clone();
                c.market.pricing = rule;
                let (sim, _) = run_one(&c, word.trim())?;
                write_run(&sim, &dir.join(word.trim()))?;
                rows.push((word.trim().to_owned(), sim.summary()));
            }
            fs::create_dir_all(&dir)?;
            let mut csv = BufWriter::new(File::create(dir.join("compare.csv"))?);
            writeln!(csv, "pricing,won,revenue,welfare,envy,ir,mean_overpayment")?;
            println!(
                "{:<16} {:>8} {:>12} {:>12} {:>8} {:>8} {:>18}",
                "pricing", "won", "revenue", "welfare", "envy", "IR", "mean overpayment"
            );
            for (name, s) in &rows {
                let (revenue, welfare) = (s.revenue.micros() as f64 / 1e6, s.welfare.micros() as f64 / 1e6);
                writeln!(
                    csv,
                    "{name},{},{},{},{:.6},{:.6},{:.6}",
                    s.won,
                    s.revenue,
                    s.welfare,
                    s.envy,
                    s.ir,
                    s.mean_overpayment()
                )?;
                println!(
                    "{name:<16} {:>8} {revenue:>12.2} {welfare:>12.2} {:>7.2}% {:>8.4} {:>18.4}",
                    s.won,
                    s.envy * 100.0,
                    s.ir,
                    s.mean_overpayment()
                );
            }
            csv.flush()?;
            charts::compare(&rows, &dir.join("compare.png"))?;
            println!("wrote {}/{{compare.csv,compare.png}} and a folder per rule", dir.display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
