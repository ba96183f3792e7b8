//! Durable without NATS: keep a market's events and snapshots in files of your own.
//!
//! ```sh
//! cargo run --example persist -- out/persist      # run it twice: the market goes on
//! ```
//!
//! Every event is appended to `events.jsonl` (and synced) before the program counts on it; every
//! few cycles the whole state goes to `snapshot.json` (written aside, then renamed, so a crash
//! leaves the old one whole). On start the market is restored from the snapshot and the events
//! after it are replayed: the state hash it prints at start equals the one the last run printed
//! at its end. Any store works the same way: a database row per event, an object per snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use capacity_auction::{AgentId, Bid, BidId, Event, Market, MarketConfig, Slot, Snapshot};

/// Cycles between snapshots.
const SNAPSHOT_EVERY: u64 = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out/persist".into()));
    fs::create_dir_all(&dir)?;
    let market = open(&dir)?;
    println!(
        "started at event {}, slot {}, state hash {}",
        market.last_seq(),
        market.now(),
        market.state_hash()?
    );

    // Persist every event the market makes from now on, before relying on it.
    let mut events = market.subscribe();
    let mut log = OpenOptions::new().create(true).append(true).open(dir.join("events.jsonl"))?;
    let mut persist = |market: &Market| -> std::io::Result<()> {
        market.flush();
        for event in events.drain() {
            writeln!(log, "{}", event.to_json())?;
        }
        log.sync_data()
    };

    // A little trading: fund two agents once, then a few bids and cycles each run.
    let (a, b) = (AgentId::new("agent-a")?, AgentId::new("agent-b")?);
    for agent in [&a, &b] {
        if market.balance(agent).is_none() {
            market.deposit(agent, "100".parse()?)?;
        }
    }
    let run = market.cycles();
    for round in 0..4 {
        let now = market.now().get();
        let bundle = market.bundle([("cpu", "0.6")])?;
        for (agent, limit) in [(&a, "7"), (&b, "5")] {
            let id = BidId::new(&format!("{agent}-{run}-{round}"))?;
            let bid = Bid::new(id, agent.clone(), bundle, 2, limit.parse()?).window(Slot(now), Slot(now + 4));
            market.submit(bid)?;
        }
        market.clear(Slot(now + 1))?;
        persist(&market)?;
        if market.cycles().is_multiple_of(SNAPSHOT_EVERY) {
            save_snapshot(&dir, &market.snapshot()?)?;
        }
    }
    let (ba, bb) = (market.balance(&a).unwrap(), market.balance(&b).unwrap());
    println!("agent-a {} available, agent-b {} available", ba.available, bb.available);
    println!("ended at event {}, state hash {}", market.last_seq(), market.state_hash()?);
    Ok(())
}

/// The market as the files leave it: the snapshot restored, the events after it replayed.
fn open(dir: &Path) -> Result<Market, Box<dyn std::error::Error>> {
    let market = match fs::read(dir.join("snapshot.json")) {
        Ok(json) => Market::restore(Snapshot::from_json(&json)?)?,
        Err(_) => {
            let config = MarketConfig { resources: vec!["cpu".into()], ..MarketConfig::default() };
            Market::builder().config(config).build()?
        }
    };
    if let Ok(file) = File::open(dir.join("events.jsonl")) {
        let after = market.last_seq();
        let mut later = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            // A line cut short by a crash is the end of what was stored.
            let Ok(event) = Event::from_json(line.as_bytes()) else { break };
            if event.seq > after {
                later.push(event);
            }
        }
        market.replay(&later)?;
        // A cycle the last run cut but did not record the end of is finished as it would have.
        market.resume();
    }
    Ok(market)
}

fn save_snapshot(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let aside = dir.join("snapshot.json.new");
    let mut file = File::create(&aside)?;
    file.write_all(&snapshot.to_json())?;
    file.sync_all()?;
    fs::rename(aside, dir.join("snapshot.json"))
}
