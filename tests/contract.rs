//! `docs/design.md` is the project's contract; these tests fail when it drifts from the code.
//!
//! They read its tables (rows starting with `|`, the first column in backticks) and compare them
//! with what the code says: the reason codes of `RejectCode`; the event types `EventKind` reads
//! and the fields `Event::to_json` writes for one sample of each (with feature `schema`, also the
//! generated event schema); the keys and defaults `MarketConfig` serializes; with feature `nats`,
//! the subjects, stream, buckets and headers of a served market. They also run the document's
//! examples, check that every `design.md §N` reference names a section it has, and that nothing
//! links to the folder outside the repository where the contract used to live.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capacity_auction::{
    AgentId, BidId, BundleShares, Capacity, CapacitySlots, Credits, Event, EventKind, MarketConfig, Price,
    RejectCode, Scenario, Slot,
};
use serde_json::{Map, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn design() -> String {
    std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md exists")
}

/// A markdown table: its header cells and the cells of each row, trimmed.
#[derive(Debug)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The cells of a table line; a `|` inside backticks does not split.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let (mut out, mut cell, mut code) = (Vec::new(), String::new(), false);
    for c in inner.chars() {
        match c {
            '`' => {
                code = !code;
                cell.push(c);
            }
            '|' if !code => out.push(std::mem::take(&mut cell).trim().to_owned()),
            _ => cell.push(c),
        }
    }
    out.push(cell.trim().to_owned());
    out
}

/// Every table of `doc`: runs of lines starting with `|`, the second being the `|---|` rule.
fn tables(doc: &str) -> Vec<Table> {
    let mut found = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in doc.lines().chain([""]) {
        if line.trim_start().starts_with('|') {
            lines.push(line);
            continue;
        }
        if lines.len() >= 2 {
            found
                .push(Table { header: cells(lines[0]), rows: lines[2..].iter().map(|l| cells(l)).collect() });
        }
        lines.clear();
    }
    found
}

/// The one table of `doc` whose header is `header`.
fn table(doc: &str, header: &[&str]) -> Table {
    let mut matching: Vec<Table> = tables(doc).into_iter().filter(|t| t.header == header).collect();
    assert_eq!(matching.len(), 1, "docs/design.md has {} tables headed {header:?}", matching.len());
    matching.pop().unwrap()
}

/// Every backticked span of a cell, in order.
fn spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The key a row's first cell names: exactly one backticked span.
fn key(row: &[String]) -> String {
    let cell = &row[0];
    let inner = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`'));
    match inner {
        Some(k) if !k.contains('`') => k.to_owned(),
        _ => panic!("the first column is one name in backticks, got `{cell}`"),
    }
}

/// The first column of a table as a set; a repeated key fails.
fn keys(t: &Table) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for row in &t.rows {
        assert!(set.insert(key(row)), "`{}` is listed twice", key(row));
    }
    set
}

/// Fails naming what one side has and the other lacks.
fn assert_same(documented: &BTreeSet<String>, code: &BTreeSet<String>, what: &str) {
    let missing: Vec<_> = code.difference(documented).collect();
    let extra: Vec<_> = documented.difference(code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the code has {missing:?} that docs/design.md lacks; docs/design.md names {extra:?} that the code lacks"
    );
}

/// Section `n` of the document: from its `## n.` heading to the next `## `.
fn section(doc: &str, n: u32) -> String {
    let heading = format!("## {n}. ");
    let start = doc.find(&heading).unwrap_or_else(|| panic!("docs/design.md has no section {n}"));
    let rest = &doc[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The fenced ```json blocks of a text.
fn json_blocks(text: &str) -> Vec<String> {
    text.split("```json\n").skip(1).map(|b| b[..b.find("```").expect("a closed block")].to_owned()).collect()
}

#[test]
fn reason_codes_match_the_enum() {
    let documented = keys(&table(&design(), &["code", "when"]));
    let code: BTreeSet<String> = RejectCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_same(&documented, &code, "reason codes");
    for c in &documented {
        let parsed: Result<RejectCode, _> = serde_json::from_value(Value::String(c.clone()));
        assert!(parsed.is_ok(), "`{c}` is not a RejectCode");
    }
}

/// One event of every kind, with every optional field set. A kind added to `EventKind` without a
/// sample here fails `every_event_kind_has_a_sample`.
fn samples() -> Vec<EventKind> {
    let agent = AgentId::new("a").unwrap();
    let bid = BidId::new("b").unwrap();
    let credits = Credits::from_units(1);
    let price = Price::from_units(1);
    vec![
        EventKind::BidAccepted {
            bid: bid.clone(),
            agent: agent.clone(),
            beneficiary: agent.clone(),
            bundle: BundleShares(vec![(Arc::from("cpu"), "0.1".parse().unwrap())]),
            duration: 1,
            earliest_start: Slot(0),
            latest_end: Slot(1),
            limit: credits,
            good_for: 1,
        },
        EventKind::BidRejected {
            bid: "b".into(),
            agent: "a".into(),
            reason: RejectCode::Malformed,
            message: "m".into(),
        },
        EventKind::BidCancelled { bid: bid.clone(), agent: agent.clone() },
        EventKind::BidWon {
            bid: bid.clone(),
            agent: agent.clone(),
            beneficiary: agent.clone(),
            start: Slot(0),
            end: Slot(1),
            payment: credits,
        },
        EventKind::BidLost {
            bid: bid.clone(),
            agent: agent.clone(),
            retained: true,
            shortfall: Some(credits),
        },
        EventKind::BidExpired { bid, agent: agent.clone() },
        EventKind::PriceDiscovered {
            resource: "cpu".into(),
            spot: price,
            average: price,
            index: price,
            utilization: 0.5,
            requested: CapacitySlots::from_units(1),
            sold: CapacitySlots::from_units(1),
            legacy: price,
        },
        EventKind::CycleStarted { bids: 1 },
        EventKind::CycleCleared {
            bids: 1,
            won: 1,
            lost: 0,
            expired: 0,
            revenue: credits,
            welfare: credits,
            ir: 1.0,
            envy: 0.0,
        },
        EventKind::CreditsDeposited { agent: agent.clone(), amount: credits },
        EventKind::CreditsTransferred { from: agent.clone(), to: agent.clone(), amount: credits },
        EventKind::CreditsBurned { agent, amount: credits },
        EventKind::CapacityChanged {
            resource: "cpu".into(),
            from_slot: Slot(0),
            to_slot: Slot(1),
            capacity: Capacity::FULL,
        },
    ]
}

/// Every `type` `EventKind` reads, as serde lists them when refusing an unknown one: derived
/// from the enum itself, so a new variant shows up here without any feature.
fn kinds_the_code_reads() -> BTreeSet<String> {
    let refusal = serde_json::from_str::<EventKind>(r#"{"type":"?"}"#).unwrap_err().to_string();
    let at = refusal.find("expected one of").unwrap_or_else(|| panic!("unexpected refusal: {refusal}"));
    spans(&refusal[at..]).into_iter().collect()
}

#[test]
fn every_event_kind_has_a_sample() {
    let sampled: BTreeSet<String> = samples().iter().map(|k| k.type_name().to_owned()).collect();
    assert_eq!(
        kinds_the_code_reads(),
        sampled,
        "every EventKind variant needs a sample in tests/contract.rs"
    );
}

/// An event as `to_json` writes it, as a JSON object.
fn written(kind: EventKind) -> Map<String, Value> {
    let event = Event { seq: 1, cycle: Some(1), slot: Slot(0), correlation_id: Some("c".into()), kind };
    match serde_json::from_str(&event.to_json()).unwrap() {
        Value::Object(map) => map,
        other => panic!("an event is a JSON object, got {other}"),
    }
}

/// The envelope's keys: those every event writes, `type` among them.
fn envelope() -> BTreeSet<String> {
    let written: Vec<BTreeSet<String>> =
        samples().into_iter().map(|k| written(k).keys().cloned().collect()).collect();
    written.iter().skip(1).fold(written[0].clone(), |common, keys| &common & keys)
}

/// type -> its fields, from the events table of the document.
fn documented_events() -> Vec<(String, BTreeSet<String>)> {
    let t = table(&design(), &["type", "fields", "when"]);
    keys(&t);
    t.rows.iter().map(|row| (key(row), spans(&row[1]).into_iter().collect())).collect()
}

#[test]
fn event_types_and_fields_match_what_the_code_writes() {
    let documented = documented_events();
    let envelope = envelope();
    let mut types = BTreeSet::new();
    for kind in samples() {
        let name = kind.type_name().to_owned();
        let json = written(kind);
        assert_eq!(json["type"], Value::String(name.clone()));
        let fields: BTreeSet<String> = json.keys().filter(|k| !envelope.contains(*k)).cloned().collect();
        let doc = documented.iter().find(|(t, _)| *t == name);
        let (_, doc_fields) = doc.unwrap_or_else(|| panic!("the events table lacks `{name}`"));
        assert_same(doc_fields, &fields, &format!("fields of `{name}`"));
        types.insert(name);
    }
    let doc_types: BTreeSet<String> = documented.into_iter().map(|(t, _)| t).collect();
    assert_same(&doc_types, &types, "event types");
}

#[test]
fn the_envelope_matches_what_the_code_writes() {
    let documented = keys(&table(&design(), &["field", "meaning"]));
    assert_same(&documented, &envelope(), "envelope fields");
    for block in json_blocks(&section(&design(), 8)) {
        let event = Event::from_json(block.trim().as_bytes()).expect("the example is an event");
        assert_eq!(event.to_json(), block.trim(), "the example is written as the code writes it");
    }
}

#[cfg(feature = "schema")]
#[test]
fn event_schema_matches_the_samples() {
    let (_, schema) = capacity_auction::json_schemas().into_iter().find(|(n, _)| *n == "event.json").unwrap();
    let schema: Value = serde_json::from_str(&schema).unwrap();
    let documented = documented_events();
    let mut from_schema = BTreeSet::new();
    for kind in schema["oneOf"].as_array().expect("one schema per event type") {
        let properties = kind["properties"].as_object().unwrap();
        let name = properties["type"]["const"].as_str().unwrap().to_owned();
        let fields: BTreeSet<String> = properties.keys().filter(|k| *k != "type").cloned().collect();
        let doc = documented.iter().find(|(t, _)| *t == name);
        let (_, doc_fields) = doc.unwrap_or_else(|| panic!("the events table lacks `{name}`"));
        assert_same(doc_fields, &fields, &format!("fields of `{name}` in the schema"));
        from_schema.insert(name);
    }
    let doc_types: BTreeSet<String> = documented.into_iter().map(|(t, _)| t).collect();
    assert_same(&doc_types, &from_schema, "event types in the schema");
    let sampled: BTreeSet<String> = samples().iter().map(|k| k.type_name().to_owned()).collect();
    assert_eq!(from_schema, sampled, "every EventKind variant needs a sample in tests/contract.rs");
    let codes: BTreeSet<String> = schema["$defs"]["RejectCode"]["oneOf"]
        .as_array()
        .expect("reason codes in the schema")
        .iter()
        .map(|c| c["const"].as_str().unwrap().to_owned())
        .collect();
    let all: BTreeSet<String> = RejectCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(codes, all, "RejectCode::ALL lists every variant");
}

/// A decimal read from a JSON string or number.
fn decimal(v: &Value) -> Option<rust_decimal::Decimal> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// Whether a default as the document writes it (`1000`, `"default"`, `critical_value`, `null`,
/// `0.2`, …) is the value the code serializes.
fn same_value(documented: &str, actual: &Value) -> bool {
    let doc = serde_json::from_str(documented).unwrap_or_else(|_| Value::String(documented.to_owned()));
    doc == *actual || decimal(&doc).is_some_and(|d| decimal(actual) == Some(d))
}

#[test]
fn configuration_keys_and_defaults_match_the_code() {
    let t = table(&design(), &["key", "meaning", "default"]);
    let Value::Object(defaults) = serde_json::to_value(MarketConfig::default()).unwrap() else {
        panic!("a configuration is a JSON object");
    };
    let code: BTreeSet<String> = defaults.keys().cloned().collect();
    assert_same(&keys(&t), &code, "configuration keys");
    for row in &t.rows {
        let name = key(row);
        let documented = spans(&row[2]);
        let documented = documented.first().unwrap_or_else(|| panic!("`{name}` has no default in backticks"));
        let actual = &defaults[&name];
        assert!(
            same_value(documented, actual),
            "`{name}` defaults to {actual}, docs/design.md says `{documented}`"
        );
    }
}

#[test]
fn the_scenario_example_passes() {
    let blocks = json_blocks(&section(&design(), 9));
    assert!(!blocks.is_empty(), "section 9 shows a scenario");
    for block in blocks {
        let report = Scenario::from_json(&block).expect("the example is a scenario").run();
        assert!(report.passed(), "{report}");
    }
}

#[cfg(feature = "nats")]
#[test]
fn nats_names_match_the_subjects() {
    use capacity_auction::bindings::nats::{CORRELATION_ID, Subjects};

    let doc = design();
    let s = Subjects::new(None).unwrap();
    let mut served: BTreeSet<String> = [
        s.bid("<agent>"),
        s.bids("<agent>"),
        s.cancel("<agent>"),
        s.state("<resource>"),
        s.balance("<agent>"),
        s.transfer("<agent>"),
        s.deposit(),
        s.capacity(),
        s.clear(),
        s.status(),
        s.retained_losses(),
    ]
    .into();
    let mut economy = BTreeSet::new();
    for kind in samples() {
        let subject = s.event(&kind).replace(kind.type_name(), "<type>");
        if subject.starts_with("system.economy.") {
            economy.insert(kind.type_name().to_owned());
        }
        served.insert(subject);
    }
    let t = table(&doc, &["subject", "kind", "payload", "reply"]);
    assert_same(&keys(&t), &served, "NATS subjects");
    let row = t.rows.iter().find(|r| key(r) == "system.economy.<type>").unwrap();
    let types: BTreeSet<String> = samples().iter().map(|k| k.type_name().to_owned()).collect();
    let named: BTreeSet<String> =
        row[1..].iter().flat_map(|c| spans(c)).filter(|t| types.contains(t)).collect();
    assert_same(&named, &economy, "events on system.economy");

    let names = keys(&table(&doc, &["stream or bucket", "what it is", "what it holds"]));
    let all = [
        s.journal(),
        s.stream(),
        s.snapshots_bucket(),
        s.lease_bucket(),
        s.prices_bucket(),
        s.agents_bucket(),
    ];
    assert_same(&names, &all.into(), "streams and buckets");
    let ns = Subjects::new(Some("ns")).unwrap();
    assert_eq!(ns.bid("<agent>"), format!("ns.{}", s.bid("<agent>")));
    assert!(doc.contains("`ns.`"));
    for name in [ns.stream(), ns.prices_bucket(), ns.agents_bucket()] {
        assert!(doc.contains(&format!("`{name}`")), "docs/design.md does not name `{name}`");
    }

    let headers = table(&doc, &["header", "on", "value"]);
    let headers: BTreeSet<String> = headers.rows.iter().flat_map(|r| spans(&r[0])).collect();
    for h in [CORRELATION_ID, "Nats-Msg-Id", "traceparent", "tracestate"] {
        assert!(headers.contains(h), "the headers table lacks `{h}`");
    }
}

/// The project's text files a reader may follow a reference from (this folder's files too).
fn project_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| ["rs", "md", "toml", "conf", "json"].contains(&e.to_str().unwrap()))
                || path.ends_with("scripts/test")
            {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("Cargo.toml")];
    for dir in ["docs", "src", "tests", "benches", "examples", "scenarios", "schema", "deploy", "scripts"] {
        walk(&root.join(dir), &mut files);
    }
    files
}

#[test]
fn nothing_points_outside_the_repository() {
    // Spelled in pieces so that this file does not name them.
    let needles = [concat!("../", "shared"), concat!("shared", "/DESIGN"), concat!("DESIGN", ".md")];
    let mut found = Vec::new();
    for path in project_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the contract is docs/design.md; these lines point elsewhere:\n{}",
        found.join("\n")
    );
}

#[test]
fn section_references_name_sections_that_exist() {
    let doc = design();
    let exists = |n: u32| doc.contains(&format!("\n## {n}. "));
    let mut broken = Vec::new();
    for path in project_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // `docs/design.md §8`, `[`design.md`](design.md) §5`, and the document's own `section 7`.
        let mut refs: Vec<&str> =
            text.match_indices("design.md").map(|(i, m)| &text[i + m.len()..]).collect();
        if path.ends_with("docs/design.md") {
            refs.extend(text.match_indices("section ").map(|(i, m)| &text[i + m.len()..]));
        }
        for after in refs {
            let after = after.trim_start_matches([')', '`', ' ']).trim_start_matches('§');
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<u32>()
                && !exists(n)
            {
                broken.push(format!("{}: section {n}", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "references to sections docs/design.md lacks:\n{}", broken.join("\n"));
}

#[test]
fn journal_runs_of_retained_losses_read_as_documented() {
    let doc = design();
    assert!(doc.contains(r#"`"type":"bids_retained"`"#), "docs/design.md names the run's type");
    assert!(doc.contains(r#"`"bids":[[bid, agent, shortfall], …]`"#), "docs/design.md gives a run's entries");
    let line = br#"{"v":1,"seq":7,"cycle":3,"slot":12,"correlation_id":null,"type":"bids_retained","bids":[["b1","a1",null],["b2","a2","0.5"]]}"#;
    let events = Event::from_lines(line).expect("a run");
    let seen: Vec<(u64, &str, bool, Option<String>)> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::BidLost { bid, retained, shortfall, .. } => {
                (e.seq, bid.as_str(), *retained, shortfall.map(|s| s.to_string()))
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seen, vec![(7, "b1", true, None), (8, "b2", true, Some("0.5".to_string()))]);
    assert!(events.iter().all(|e| e.cycle == Some(3) && e.slot.0 == 12));
}
