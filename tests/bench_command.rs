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
