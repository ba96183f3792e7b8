//! The price-discovery simulator: deterministic from its seed, honest figures, and the
//! `simulate` command's files.
#![cfg(feature = "sim")]

use capacity_auction::{Pattern, PricingRule, SimConfig, Simulation};

fn small() -> SimConfig {
    SimConfig { agents: 200, cycles: 400, arrival: 0.01, ..SimConfig::default() }
}

fn csvs(sim: &Simulation) -> (Vec<u8>, Vec<u8>) {
    let (mut prices, mut cycles) = (Vec::new(), Vec::new());
    sim.write_prices(&mut prices).unwrap();
    sim.write_cycles(&mut cycles).unwrap();
    (prices, cycles)
}

#[test]
fn the_same_seed_gives_the_same_csvs() {
    let a = small().run(|_| {}).unwrap();
    let b = small().run(|_| {}).unwrap();
    assert_eq!(csvs(&a), csvs(&b));
    let other = SimConfig { seed: 2, ..small() }.run(|_| {}).unwrap();
    assert_ne!(csvs(&a).0, csvs(&other).0, "another seed, another run");
}

#[test]
fn every_cycle_is_recorded_with_honest_figures() {
    let config = small();
    let mut seen = 0;
    let sim = config.run(|c| seen = c).unwrap();
    assert_eq!(seen, config.cycles);
    assert_eq!(sim.reports.len() as u64, config.cycles);
    assert!(sim.reports.iter().enumerate().all(|(i, c)| c.cycle == i as u64 + 1));
    assert!(sim.reports.iter().all(|c| c.prices.len() == config.market.resources.len()));
    assert!(sim.reports.iter().all(|c| c.ir == 1.0 && (0.0..=1.0).contains(&c.envy)));
    assert!(sim.reports.iter().all(|c| c.bids == c.won + c.lost + c.expired));
    let summary = sim.summary();
    assert!(summary.won > 0 && summary.lost > 0, "the small run has competition: {summary:?}");
    assert_eq!(summary.overpayment.micros(), 0, "critical-value winners pay their critical values");
    assert_eq!(sim.marks.len(), 2, "the spike and the outage are marked");
    assert!(summary.table().contains("cpu"));
}

#[test]
fn scarcity_raises_the_price_and_it_falls_after() {
    // A cpu outage in the middle of the run: cpu's index during it is above its index before,
    // and falls back once capacity returns.
    let config = SimConfig { patterns: vec![Pattern::Outage], ..small() };
    let sim = config.run(|_| {}).unwrap();
    let mark = &sim.marks[0];
    let cpu = |from: u64, to: u64| {
        let rows: Vec<f64> = sim
            .reports
            .iter()
            .filter(|c| (from..to).contains(&c.cycle))
            .map(|c| c.prices[0].index.micros() as f64)
            .collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    };
    let length = mark.to - mark.from;
    let (before, during, after) = (
        cpu(mark.from - length, mark.from),
        cpu(mark.from, mark.to),
        cpu(mark.to + length, mark.to + 2 * length),
    );
    assert!(during > before && during > after, "before {before}, during {during}, after {after}");
}

#[test]
fn pricing_rules_differ_as_they_should() {
    let run = |pricing| {
        let mut c = small();
        c.market.pricing = pricing;
        c.run(|_| {}).unwrap().summary()
    };
    let bid = run(PricingRule::PayAsBid);
    let critical = run(PricingRule::CriticalValue);
    let uniform = run(PricingRule::Uniform);
    assert_eq!(bid.revenue, bid.welfare, "pay-as-bid winners pay their limits");
    assert!(critical.revenue < critical.welfare);
    assert!(bid.mean_overpayment() > 0.0 && critical.mean_overpayment() == 0.0);
    assert!(uniform.ir == 1.0 && uniform.revenue <= uniform.welfare);
}

#[test]
fn configs_read_from_toml_and_json_and_bad_ones_are_refused() {
    let dir = std::env::temp_dir().join(format!("capacity-auction-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("sim.toml");
    std::fs::write(
        &toml,
        "agents = 30\ncycles = 50\npatterns = [\"steady\"]\n[market]\npricing = \"uniform\"\n",
    )
    .unwrap();
    let c = SimConfig::from_file(&toml).unwrap();
    assert_eq!((c.agents, c.cycles, c.market.pricing), (30, 50, PricingRule::Uniform));
    let json = dir.join("sim.json");
    std::fs::write(
        &json,
        r#"{"agents": 31, "strategies": {"truthful": 1, "shading": 0, "adaptive": 0, "bursty": 0}}"#,
    )
    .unwrap();
    assert_eq!(SimConfig::from_file(&json).unwrap().agents, 31);
    std::fs::write(&json, r#"{"agents": 31, "colour": "red"}"#).unwrap();
    assert!(SimConfig::from_file(&json).is_err());
    for bad in [
        SimConfig { agents: 0, ..small() },
        SimConfig { arrival: 1.5, ..small() },
        SimConfig { reward_every: 0, ..small() },
    ] {
        assert!(bad.run(|_| {}).is_err());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn the_command_writes_csvs_charts_and_a_comparison() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("capacity-auction-simulate-{}", std::process::id()));
    let run = |name: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["simulate", "--agents", "150", "--cycles", "300", "--out"])
            .arg(&dir)
            .args(["--name", name])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let stdout = run("one", &[]);
    assert!(stdout.contains("mean index") && stdout.contains("envy"), "{stdout}");
    run("two", &[]);
    let file = |run: &str, name: &str| std::fs::read(dir.join(run).join(name)).unwrap();
    for name in ["prices.csv", "cycles.csv"] {
        assert_eq!(file("one", name), file("two", name), "{name} differs between identical runs");
    }
    let prices = String::from_utf8(file("one", "prices.csv")).unwrap();
    assert!(prices.starts_with("cycle,resource,spot,average,index,utilization,requested,sold\n"));
    assert_eq!(prices.lines().count(), 1 + 300 * 4);
    for chart in ["prices.png", "welfare.png"] {
        assert!(file("one", chart).starts_with(b"\x89PNG\r\n\x1a\n"), "{chart} is a PNG");
    }

    let stdout = run("cmp", &["--compare", "pricing=pay_as_bid,critical_value,uniform"]);
    assert!(stdout.contains("pay_as_bid") && stdout.contains("uniform"), "{stdout}");
    let table = String::from_utf8(file("cmp", "compare.csv")).unwrap();
    assert_eq!(table.lines().count(), 4);
    assert!(file("cmp", "compare.png").starts_with(b"\x89PNG"));
    assert!(dir.join("cmp/critical_value/prices.csv").exists());

    let bad = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
        .args(["simulate", "--pricing", "cheapest", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`cheapest` is not a pricing rule"));
    std::fs::remove_dir_all(&dir).unwrap();
}
