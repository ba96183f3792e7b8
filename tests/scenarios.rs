//! The bundled scenarios pass in-process, the runner catches a wrong expectation, and the
//! command line prints verdicts and writes identical event files run after run.

use std::path::PathBuf;

use capacity_auction::Scenario;

fn bundled() -> Vec<PathBuf> {
    Scenario::files(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")]).unwrap()
}

#[test]
fn bundled_scenarios_pass() {
    let files = bundled();
    assert!(files.len() >= 15, "only {} scenarios", files.len());
    for path in files {
        let report = Scenario::load(&path).unwrap().run();
        assert!(report.passed(), "{}: {report}", path.display());
        assert!(!report.events.is_empty());
    }
}

#[test]
fn a_wrong_expectation_fails_with_its_reason() {
    let text = std::fs::read_to_string(&bundled()[0]).unwrap();
    let wrong = text.replace(r#""payment": "50""#, r#""payment": "49""#);
    assert_ne!(text, wrong);
    let report = Scenario::from_json(&wrong).unwrap().run();
    assert!(!report.passed());
    assert!(report.to_string().contains("sequence[0]"), "{report}");

    let forbidden = text.replace(
        r#""forbidden": [{"type": "bid_won", "bid": "b1"}]"#,
        r#""forbidden": [{"type": "bid_lost"}]"#,
    );
    let report = Scenario::from_json(&forbidden).unwrap().run();
    assert!(report.to_string().contains("forbidden"), "{report}");

    let balance = text.replace(r#""agent-2": "50""#, r#""agent-2": "51""#);
    let report = Scenario::from_json(&balance).unwrap().run();
    assert!(report.to_string().contains("balance agent-2"), "{report}");
}

#[test]
fn steps_that_should_be_refused_are_checked() {
    let s = Scenario::from_json(
        r#"{"name": "n", "market": {"resources": ["cpu"]}, "accounts": {"a": "5"},
            "steps": [{"deposit": {"agent": "a", "amount": "1"}, "rejected": "invalid_amount"}]}"#,
    )
    .unwrap();
    assert!(s.run().to_string().contains("expected invalid_amount, it succeeded"));
    let s = Scenario::from_json(
        r#"{"name": "n", "steps": [{"transfer": {"from": "a", "to": "b", "amount": "1"}}]}"#,
    )
    .unwrap();
    assert!(s.run().to_string().contains("unknown_agent"));
    assert!(Scenario::from_json(r#"{"name": "n", "steps": [{"clear": {"at": 0}, "colour": 1}]}"#).is_err());
    assert!(Scenario::from_json(r#"{"name": "n", "steps": [{"clear": {"at": 0}, "deposit": {}}]}"#).is_err());
    assert!(Scenario::from_json(r#"{"name": "n", "steps": [], "expect": {"later": []}}"#).is_err());
}

#[cfg(feature = "cli")]
#[test]
fn command_line_runs_folders_and_writes_identical_events() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("capacity-auction-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |events: &str| {
        Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["scenario", "run", concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"), "--events"])
            .arg(dir.join(events))
            .output()
            .unwrap()
    };
    let first = run("a.jsonl");
    let second = run("b.jsonl");
    assert!(first.status.success());
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert!(stdout.ends_with(&format!("{} passed, 0 failed\n", bundled().len())), "{stdout}");
    assert_eq!(stdout, String::from_utf8(second.stdout).unwrap());
    let a = std::fs::read(dir.join("a.jsonl")).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a, std::fs::read(dir.join("b.jsonl")).unwrap());

    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "bad", "steps": [{"clear": {"at": 0}}], "expect": {"sequence": [{"type": "bid_won"}]}}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
        .args(["scenario", "run"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("FAIL bad: sequence[0]") && stdout.ends_with("0 passed, 1 failed\n"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
