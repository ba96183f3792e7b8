//! Every bundled scenario passes over NATS as it does in-process, with the same events.

#![cfg(feature = "nats")]

mod nats_harness;

use std::path::Path;

use capacity_auction::Scenario;
use capacity_auction::bindings::nats::run_scenario;
use nats_harness::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenarios_pass_over_nats_with_the_in_process_events() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let files = Scenario::files(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")]).unwrap();
    assert!(files.len() >= 20, "{files:?}");
    for file in files {
        let scenario = Scenario::load(&file).unwrap();
        let local = scenario.run();
        assert!(local.passed(), "{local}");
        let remote = run_scenario(&nats, &scenario).await;
        assert!(remote.passed(), "over NATS: {remote}");
        assert_eq!(remote.events, local.events, "{}", scenario.name);
    }
    let js = async_nats::jetstream::new(nats);
    let mut names = js.stream_names();
    use futures_util::StreamExt;
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        assert!(!name.contains("scenario_"), "{name} was left behind");
    }
}
