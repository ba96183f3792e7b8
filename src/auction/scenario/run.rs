//! Running a scenario on an in-process market and judging what happened.

use std::fmt;

use serde_json::{Map, Value};

use super::expect::{BalanceExpect, matches};
use super::{Action, Scenario, Step};
use crate::auction::correlated::Correlated;
use crate::auction::error::{RejectCode, Rejection};
use crate::auction::events::Event;
use crate::auction::ids::{AgentId, BidId};
use crate::auction::ledger::Balance;
use crate::auction::market::Market;
use crate::auction::money::Credits;
use crate::capacity::{Capacity, Slot};

/// The verdict on one scenario, with every event it produced.
#[derive(Debug)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Every event, in `seq` order.
    pub events: Vec<Event>,
}

impl ScenarioReport {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            None => write!(f, "PASS {}", self.name),
            Some(why) => write!(f, "FAIL {}: {why}", self.name),
        }
    }
}

fn agent(s: &str) -> Result<AgentId, Rejection> {
    AgentId::new(s).map_err(|e| Rejection::new(RejectCode::Malformed, e.to_string()))
}

fn credits(d: rust_decimal::Decimal) -> Result<Credits, Rejection> {
    Credits::from_decimal(d).map_err(|e| Rejection::new(RejectCode::InvalidAmount, e.to_string()))
}

/// Performs one step; `Err` when the market refused it.
fn perform(m: &Correlated<'_>, action: &Action) -> Result<(), Rejection> {
    match action {
        Action::Submit(raw) => m.submit_json(raw.get().as_bytes()).map(drop),
        Action::Cancel { agent: a, bid } => {
            let bid = BidId::new(bid).map_err(|e| Rejection::new(RejectCode::Malformed, e.to_string()))?;
            m.cancel(&agent(a)?, &bid)
        }
        Action::Deposit { agent: a, amount } => m.deposit(&agent(a)?, credits(*amount)?),
        Action::Transfer { from, to, amount } => m.transfer(&agent(from)?, &agent(to)?, credits(*amount)?),
        Action::Capacity { resource, from_slot, to_slot, capacity } => {
            let capacity = Capacity::from_decimal(*capacity)
                .map_err(|e| Rejection::new(RejectCode::InvalidShare, e.to_string()))?;
            m.set_capacity(resource, Slot(*from_slot), Slot(*to_slot), capacity)
        }
        Action::Clear { at } => m.clear(Slot(*at)).map(drop),
    }
}

impl Step {
    /// Judges step `n`'s outcome: a step marked `rejected` must be refused with that code; a
    /// refused deposit, transfer, capacity change or clearing is a mistake in the scenario.
    ///
    /// # Errors
    ///
    /// Why the outcome fails the scenario.
    pub fn judge(&self, n: usize, outcome: Result<(), Rejection>) -> Result<(), String> {
        match (&self.rejected, outcome) {
            (Some(code), Ok(())) => Err(format!("{}: expected {code}, it succeeded", step_name(n, self))),
            (Some(code), Err(r)) if r.code != *code => {
                Err(format!("{}: expected {code}, got {r}", step_name(n, self)))
            }
            (None, Err(r)) if !matches!(self.action, Action::Submit(_) | Action::Cancel { .. }) => {
                Err(format!("{}: refused: {r}", step_name(n, self)))
            }
            _ => Ok(()),
        }
    }
}

fn step_name(n: usize, step: &Step) -> String {
    let kind = match step.action {
        Action::Submit(_) => "submit",
        Action::Cancel { .. } => "cancel",
        Action::Deposit { .. } => "deposit",
        Action::Transfer { .. } => "transfer",
        Action::Capacity { .. } => "capacity",
        Action::Clear { .. } => "clear",
    };
    format!("step {} ({kind})", n + 1)
}

impl Scenario {
    /// Runs the scenario on a fresh in-process market and checks its expectations.
    pub fn run(&self) -> ScenarioReport {
        let mut report = ScenarioReport { name: self.name.clone(), failure: None, events: Vec::new() };
        let market = match Market::builder().config(self.market.clone()).build() {
            Ok(m) => m,
            Err(e) => {
                report.failure = Some(format!("market: {e}"));
                return report;
            }
        };
        let mut events = market.subscribe();
        report.failure = self.drive(&market).err();
        market.flush();
        report.events = events.drain();
        if report.failure.is_none() {
            report.failure = self.check(&report.events, |a| market.balance(a)).err();
        }
        report
    }

    fn drive(&self, market: &Market) -> Result<(), String> {
        for (name, &amount) in &self.accounts {
            let a = agent(name).map_err(|e| format!("account {name}: {e}"))?;
            market.deposit(&a, amount).map_err(|e| format!("account {name}: {e}"))?;
        }
        for (n, step) in self.steps.iter().enumerate() {
            let handle = market.tagged(step.correlation_id.as_deref());
            step.judge(n, perform(&handle, &step.action))?;
        }
        Ok(())
    }

    /// Checks the expectations against `events` (every event of a run, in `seq` order) and the
    /// balances `balance` reports: how a run on another transport is judged.
    ///
    /// # Errors
    ///
    /// The first expectation that does not hold.
    pub fn check(
        &self,
        events: &[Event],
        mut balance: impl FnMut(&AgentId) -> Option<Balance>,
    ) -> Result<(), String> {
        let json: Vec<Map<String, Value>> = events
            .iter()
            .map(|e| match serde_json::to_value(e) {
                Ok(Value::Object(map)) => map,
                _ => unreachable!("an event serializes to an object"),
            })
            .collect();
        let mut at = 0;
        for (n, pattern) in self.expect.sequence.iter().enumerate() {
            match json[at..].iter().position(|e| matches(pattern, e)) {
                Some(found) => at += found + 1,
                None => {
                    let after = if at == 0 { String::new() } else { format!(" after seq {at}") };
                    return Err(format!("sequence[{n}] {} not found{after}", Value::Object(pattern.clone())));
                }
            }
        }
        for pattern in &self.expect.forbidden {
            if let Some(e) = json.iter().find(|e| matches(pattern, e)) {
                return Err(format!(
                    "forbidden {} matched {}",
                    Value::Object(pattern.clone()),
                    Value::Object(e.clone())
                ));
            }
        }
        for (name, expected) in &self.expect.balances {
            let a = agent(name).map_err(|e| format!("balance {name}: {e}"))?;
            let got = balance(&a).ok_or_else(|| format!("balance {name}: no such account"))?;
            let (available, escrowed) = match *expected {
                BalanceExpect::Available(c) => (Some(c), None),
                BalanceExpect::Parts { available, escrowed } => (available, escrowed),
            };
            if let Some(want) = available
                && want != got.available
            {
                return Err(format!("balance {name}: available {} is not {want}", got.available));
            }
            if let Some(want) = escrowed
                && want != got.escrowed
            {
                return Err(format!("balance {name}: escrowed {} is not {want}", got.escrowed));
            }
        }
        Ok(())
    }
}
