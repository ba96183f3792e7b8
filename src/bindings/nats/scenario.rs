//! Scenarios end to end over NATS: a service for the scenario's market under a namespace of its
//! own, every step sent as agents and the operator would send it, and the verdict taken from
//! that namespace's `audit_log` and balances read over `economic.balance`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_nats::Client;

use super::{ClientError, MarketClient, MarketService, ServiceConfig, Subjects};
use crate::{
    Action, AgentId, Balance, Capacity, Credits, Event, Market, RejectCode, Rejection, Scenario,
    ScenarioReport, Slot,
};

/// Runs `scenario` over NATS on the server `nats` is connected to and judges it as
/// [`Scenario::run`] does in-process: the same scenarios pass both ways, with the same events.
///
/// The scenario gets a fresh namespace (its stream and buckets are deleted afterwards); steps
/// without a correlation id send none, so events equal the in-process run's.
pub async fn run_scenario(nats: &Client, scenario: &Scenario) -> ScenarioReport {
    let mut report = ScenarioReport { name: scenario.name.clone(), failure: None, events: Vec::new() };
    if let Err(e) = Market::builder().config(scenario.market.clone()).build() {
        report.failure = Some(format!("market: {e}"));
        return report;
    }
    let namespace = fresh_namespace(&scenario.name);
    let config = ServiceConfig {
        namespace: Some(namespace.clone()),
        cadence: None,
        snapshot_every: None,
        ..ServiceConfig::default()
    };
    let service = match MarketService::start(nats.clone(), scenario.market.clone(), config).await {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(format!("service: {e}"));
            return report;
        }
    };
    let client = MarketClient::new(nats.clone(), Some(&namespace))
        .expect("a fresh namespace is a token")
        .timeout(Duration::from_secs(30));
    report.failure = drive(&client, scenario).await.err();
    if report.failure.is_none() && !service.caught_up(Duration::from_secs(30)).await {
        report.failure = Some("the audit_log did not catch up with the journal in 30 s".into());
    }
    if report.failure.is_none() {
        match audit_log(&client).await {
            Ok(events) => report.events = events,
            Err(e) => report.failure = Some(e),
        }
    }
    if report.failure.is_none() {
        let balances = balances(&client, scenario).await;
        report.failure =
            scenario.check(&report.events, |a| balances.get(a.as_str()).copied().flatten()).err();
    }
    service.shutdown().await;
    remove(nats, service_subjects(&namespace)).await;
    report
}

fn fresh_namespace(name: &str) -> String {
    let stem: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).take(32).collect();
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("scenario_{stem}_{:x}", nanos % (1 << 48))
}

fn service_subjects(namespace: &str) -> Subjects {
    Subjects::new(Some(namespace)).expect("a fresh namespace is a token")
}

async fn drive(client: &MarketClient, scenario: &Scenario) -> Result<(), String> {
    for (name, &amount) in &scenario.accounts {
        client.deposit(name, amount).await.map_err(|e| format!("account {name}: {e}"))?;
    }
    for (n, step) in scenario.steps.iter().enumerate() {
        let client = match &step.correlation_id {
            Some(cid) => client.clone().correlation_id(cid.clone()),
            None => client.clone(),
        };
        let outcome = match perform(&client, &step.action).await {
            Ok(()) => Ok(()),
            Err(ClientError::Refused(r)) => Err(r),
            Err(e) => return Err(format!("step {}: {e}", n + 1)),
        };
        step.judge(n, outcome)?;
    }
    Ok(())
}

fn refused(code: RejectCode, e: impl std::fmt::Display) -> ClientError {
    ClientError::Refused(Rejection::new(code, e.to_string()))
}

fn credits(d: rust_decimal::Decimal) -> Result<Credits, ClientError> {
    Credits::from_decimal(d).map_err(|e| refused(RejectCode::InvalidAmount, e))
}

/// One step as its sender would send it: a bid on its agent's subject, a cancel or transfer on
/// the agent's, the rest on the operator's.
async fn perform(client: &MarketClient, action: &Action) -> Result<(), ClientError> {
    match action {
        Action::Submit(raw) => {
            #[derive(serde::Deserialize)]
            struct Named {
                agent: Option<String>,
            }
            let agent =
                serde_json::from_str::<Named>(raw.get()).ok().and_then(|n| n.agent).unwrap_or_default();
            if AgentId::new(&agent).is_err() {
                return Err(ClientError::BadAnswer(format!(
                    "a bid naming agent `{agent}` has no subject to go to over NATS"
                )));
            }
            let subject = client.subjects().bid(&agent);
            let answer = client.request(subject, raw.get().to_owned().into()).await?;
            let reply: super::Reply =
                serde_json::from_slice(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
            reply.into_result().map(drop).map_err(ClientError::Refused)
        }
        Action::Cancel { agent, bid } => client.cancel(agent, bid).await.map(drop),
        Action::Deposit { agent, amount } => client.deposit(agent, credits(*amount)?).await.map(drop),
        Action::Transfer { from, to, amount } => client.transfer(from, to, credits(*amount)?).await.map(drop),
        Action::Capacity { resource, from_slot, to_slot, capacity } => {
            let capacity =
                Capacity::from_decimal(*capacity).map_err(|e| refused(RejectCode::InvalidShare, e))?;
            client.set_capacity(resource, Slot(*from_slot), Slot(*to_slot), capacity).await.map(drop)
        }
        Action::Clear { at } => client.clear(Some(Slot(*at))).await.map(drop),
    }
}

/// Every event of the namespace's `audit_log` (a message holds one, or a run of retained
/// losses), in order, checked gapless.
async fn audit_log(client: &MarketClient) -> Result<Vec<Event>, String> {
    let js = async_nats::jetstream::new(client.nats().clone());
    let name = client.subjects().stream();
    let mut stream = js.get_stream(&name).await.map_err(|e| format!("{name}: {e}"))?;
    let last = stream.info().await.map_err(|e| format!("{name}: {e}"))?.state.last_sequence;
    let mut events = Vec::with_capacity(last as usize);
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.map_err(|e| format!("{name} #{seq}: {e}"))?;
        let held = Event::from_lines(&message.payload).map_err(|e| format!("{name} #{seq}: {e}"))?;
        for event in held {
            if event.seq != events.len() as u64 + 1 {
                return Err(format!("{name} #{seq} holds event {} out of order", event.seq));
            }
            events.push(event);
        }
    }
    Ok(events)
}

/// The balances the scenario expects, read over `economic.balance`.
async fn balances(client: &MarketClient, scenario: &Scenario) -> BTreeMap<String, Option<Balance>> {
    let mut out = BTreeMap::new();
    for name in scenario.expect.balances.keys() {
        let balance =
            client.balance(name).await.ok().map(|b| Balance { available: b.available, escrowed: b.escrowed });
        out.insert(name.clone(), balance);
    }
    out
}

/// Deletes the namespace's streams and buckets.
async fn remove(nats: &Client, subjects: Subjects) {
    let js = async_nats::jetstream::new(nats.clone());
    let _ = js.delete_stream(subjects.stream()).await;
    let _ = js.delete_stream(subjects.journal()).await;
    for bucket in [subjects.prices_bucket(), subjects.agents_bucket(), subjects.lease_bucket()] {
        let _ = js.delete_key_value(bucket).await;
    }
    let _ = js.delete_object_store(subjects.snapshots_bucket()).await;
}
