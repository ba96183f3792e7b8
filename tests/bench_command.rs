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

    let table = run(&["--bids", "300"]);
    assert!(table.starts_with("300 bids, 1 submitting thread(s)"), "{table}");
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
