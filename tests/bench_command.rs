//! `capacity-auction bench` answers with the figures scripts track.
#![cfg(feature = "cli")]

use std::process::Command;

#[test]
fn bench_prints_a_table_or_one_json_object() {
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_capacity-auction")).arg("bench").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let json = run(&["--bids", "800", "--threads", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["bids"], 800);
    assert_eq!(v["threads"], 2);
    for key in [
        "submit_ns_per_bid",
        "clear_ns_per_bid",
        "place_ns_per_bid",
        "critical_ns_per_bid",
        "discover_ns_per_bid",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {json}");
    }
    assert!(v["bytes_per_pending_bid"].is_number() || v["bytes_per_pending_bid"].is_null());
    assert_eq!(v["won"].as_u64().unwrap() + v["lost"].as_u64().unwrap(), 800);

    assert_eq!(v["book"], "worst");
    assert_eq!(v["pricing"], "critical_value");
    assert_eq!(v["clearing_threads"], 1);

    let table = run(&["--bids", "300"]);
    assert!(table.starts_with("300 bids, worst book (horizon 3600,"), "{table}");
    assert!(table.contains("critical_value pricing, 1 submitting thread(s)"), "{table}");
    for row in [
        "submit",
        "clear: whole cycle",
        "rank and place",
        "critical values",
        "price discovery",
        "bytes per pending bid",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
}

#[test]
fn bench_takes_the_book_and_the_pricing_rule() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["bench", "--json"])
            .args(if args.contains(&"--bids") { &[][..] } else { &["--bids", "2000"][..] })
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let json = |args: &[&str]| {
        let (ok, out, err) = run(args);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    // The realistic book asks about 3x what its longer horizon offers; the worst one far more
    // once it is large, and as much as a realistic one while it is small.
    let realistic = json(&["--book", "realistic"]);
    assert_eq!(realistic["book"], "realistic");
    let over = realistic["oversubscription"].as_f64().unwrap();
    assert!(realistic["horizon"].as_u64().unwrap() >= 3600);
    assert!(over <= 3.2, "{realistic}");
    let worst = json(&["--bids", "30000", "--pricing", "pay_as_bid"]);
    assert!(worst["oversubscription"].as_f64().unwrap() > 15.0, "{worst}");
    // Pay as bid needs no critical values: the phase is not run.
    assert_eq!(worst["pricing"], "pay_as_bid");
    assert_eq!(worst["critical_ns_per_bid"].as_f64(), Some(0.0), "{worst}");
    assert!(worst["discover_ns_per_bid"].as_f64().unwrap() > 0.0);
    let uniform = json(&["--pricing", "uniform"]);
    assert_eq!(uniform["critical_ns_per_bid"].as_f64(), Some(0.0));
    // Same bids, other prices: other events.
    let critical = json(&[]);
    assert_ne!(uniform["events_hash"], critical["events_hash"]);
    // A rule that is not one is refused by name.
    let (ok, _, err) = run(&["--pricing", "vcg"]);
    assert!(!ok && err.contains("`vcg` is not a pricing rule"), "{err}");
    let (ok, _, err) = run(&["--book", "tiny"]);
    assert!(!ok && err.contains("tiny"), "{err}");
}

#[test]
fn bench_draws_how_the_cycle_scales_with_the_book() {
    let dir = std::env::temp_dir().join(format!("bench-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("scaling.png");
    let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
        .args(["bench", "--json", "--bids", "600,300", "--chart"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One object a size, smallest first.
    let sizes: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["bids"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [300, 600]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} bytes", bytes.len());
    // One size is no curve: refused before anything runs.
    let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
        .args(["bench", "--bids", "300", "--chart"])
        .arg(dir.join("one.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("two book sizes or more"));
    assert!(out.stdout.is_empty() && !dir.join("one.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_same_book_clears_to_the_same_events_whatever_the_clearing_threads() {
    let hash = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["bench", "--json", "--bids", "3000"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["events_hash"].as_str().expect("a hash of the events").to_owned()
    };
    // One submitting thread: the bids are accepted in the same order every run.
    let one = hash(&["--clearing-threads", "1"]);
    assert_eq!(one.len(), 64, "{one}");
    assert_eq!(hash(&["--clearing-threads", "2"]), one);
    assert_eq!(hash(&["--clearing-threads", "3"]), one);
}
