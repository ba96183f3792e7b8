//! The committed JSON Schemas under `schema/` are the ones the types generate.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test --features schema --test schema`.
#![cfg(feature = "schema")]

use std::path::PathBuf;

#[test]
fn committed_schemas_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
    let update = std::env::var_os("UPDATE_SCHEMA").is_some();
    for (name, generated) in capacity_auction::json_schemas() {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schema/{name} is stale: run UPDATE_SCHEMA=1 cargo test --features schema --test schema"
        );
    }
}

#[test]
fn event_schema_names_every_type() {
    let (_, event) = capacity_auction::json_schemas().into_iter().find(|(n, _)| *n == "event.json").unwrap();
    for t in [
        "bid_accepted",
        "bid_rejected",
        "bid_cancelled",
        "bid_won",
        "bid_lost",
        "bid_expired",
        "price_discovered",
        "cycle_cleared",
        "credits_deposited",
        "credits_transferred",
        "credits_burned",
        "capacity_changed",
    ] {
        assert!(event.contains(&format!("\"{t}\"")), "{t} missing from the event schema");
    }
}

#[test]
fn the_run_schema_names_what_a_run_holds() {
    let (_, run) =
        capacity_auction::json_schemas().into_iter().find(|(n, _)| *n == "retained_losses.json").unwrap();
    for field in ["\"seq\"", "\"cycle\"", "\"slot\"", "\"correlation_id\"", "\"type\"", "\"bids\""] {
        assert!(run.contains(field), "{field} missing from the run schema");
    }
}
