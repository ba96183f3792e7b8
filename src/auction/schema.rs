//! JSON Schemas of every message, generated from the types (feature `schema`).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::bid::BidRequest;
use super::config::MarketConfig;
use super::events::{BundleShares, WireIn};
use super::ids::{AgentId, BidId};
use super::money::{Credits, Price};
use crate::capacity::{Capacity, CapacitySlots, Share};

const TOKEN: &str = "^[A-Za-z0-9_-]{1,64}$";
const DECIMAL: &str = "^[0-9]+(\\.[0-9]{1,6})?$";

macro_rules! schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

fn decimal(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "type": ["string", "number"],
        "pattern": DECIMAL,
    })
}

schema!(AgentId, "AgentId", json_schema!({"type": "string", "pattern": TOKEN}));
schema!(BidId, "BidId", json_schema!({"type": "string", "pattern": TOKEN}));
schema!(Credits, "Credits", decimal("credits: at most 6 decimals, never negative; written as a string"));
schema!(Price, "Price", decimal("credits per full capacity of one resource for one slot"));
schema!(CapacitySlots, "CapacitySlots", decimal("shares times slots"));
schema!(Share, "Share", decimal("a fraction of full capacity in (0, 1]"));
schema!(Capacity, "Capacity", decimal("a fraction of full capacity in [0, 1]"));
schema!(
    BundleShares,
    "BundleShares",
    json_schema!({
        "type": "object",
        "description": "resource name -> share",
        "additionalProperties": {"type": ["string", "number"], "pattern": DECIMAL},
    })
);

/// Every message type's schema, by file name (`event.json`, …), as pretty JSON.
pub fn json_schemas() -> Vec<(&'static str, String)> {
    let pretty = |s: Schema| serde_json::to_string_pretty(&s).expect("schemas serialize") + "\n";
    vec![
        ("event.json", pretty(schemars::schema_for!(WireIn))),
        ("bid_request.json", pretty(schemars::schema_for!(BidRequest))),
        ("market_config.json", pretty(schemars::schema_for!(MarketConfig))),
        ("retained_losses.json", pretty(schemars::schema_for!(super::lines::RetainedIn))),
    ]
}
