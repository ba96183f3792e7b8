//! Generators and helpers shared by the property tests: random markets and bids.
#![allow(dead_code, unreachable_pub)]

use capacity_auction::{
    AgentId, Bid, BidId, Bundle, Capacity, Credits, Event, Market, Price, PricingRule, PriorityRule,
    ResourceId, Settlement, Share, Slot,
};
use proptest::prelude::*;

pub(crate) const HORIZON: u64 = 200;

pub(crate) fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

#[derive(Clone, Debug)]
pub(crate) struct BidSpec {
    pub(crate) agent: usize,
    pub(crate) bundle: Vec<(usize, u32)>,
    pub(crate) duration: u32,
    pub(crate) earliest: u64,
    pub(crate) slack: u64,
    pub(crate) limit: u64,
    pub(crate) good_for: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) resources: usize,
    pub(crate) priority: PriorityRule,
    pub(crate) pricing: PricingRule,
    pub(crate) settlement: Settlement,
    pub(crate) reserve: Vec<u64>,
    pub(crate) deposits: Vec<u64>,
    pub(crate) outages: Vec<(usize, u64, u64, u32)>,
    /// Price floor, and a cap above every reserve, in millionths.
    pub(crate) floor: u64,
    pub(crate) cap: Option<u64>,
    /// Threads of the critical-value pass: any count must give the same outcome.
    pub(crate) threads: usize,
    /// Critical values under every pricing rule, not only `critical_value`.
    pub(crate) always_critical: bool,
    /// Slots ahead of `now` bids may reach.
    pub(crate) horizon: u64,
}

impl Setup {
    /// Whether cycles compute critical values (and so losers' shortfalls).
    pub(crate) fn critical(&self) -> bool {
        self.always_critical || self.pricing == PricingRule::CriticalValue
    }
}

pub(crate) fn rule() -> impl Strategy<Value = PriorityRule> {
    prop_oneof![Just(PriorityRule::Value), Just(PriorityRule::Density), Just(PriorityRule::Los)]
}

pub(crate) fn pricing() -> impl Strategy<Value = PricingRule> {
    prop_oneof![Just(PricingRule::PayAsBid), Just(PricingRule::CriticalValue), Just(PricingRule::Uniform)]
}

pub(crate) fn setup() -> impl Strategy<Value = Setup> {
    (1usize..=3).prop_flat_map(|resources| {
        (
            Just(resources),
            rule(),
            pricing(),
            prop_oneof![Just(Settlement::Burn), Just(Settlement::Pool)],
            prop::collection::vec(prop_oneof![3 => Just(0u64), 1 => 1u64..200_000], resources),
            prop::collection::vec(1u64..400, 4),
            prop::collection::vec(
                (0..resources, 0u64..30, 1u64..12, prop_oneof![Just(0u32), Just(300_000), Just(500_000)]),
                0..3,
            ),
            prop_oneof![3 => Just(0u64), 1 => 1u64..150_000],
            prop_oneof![3 => Just(None), 1 => (0u64..50_000_000).prop_map(Some)],
            1usize..=3,
            any::<bool>(),
        )
            .prop_map(
                |(
                    resources,
                    priority,
                    pricing,
                    settlement,
                    reserve,
                    deposits,
                    outages,
                    floor,
                    cap,
                    threads,
                    always_critical,
                )| {
                    let top = reserve.iter().copied().max().unwrap_or(0).max(floor);
                    Setup {
                        resources,
                        priority,
                        pricing,
                        settlement,
                        reserve,
                        deposits: deposits.into_iter().map(|d| d * 1_000_000).collect(),
                        outages: outages
                            .into_iter()
                            .map(|(r, from, len, cap)| (r, from, from + len, cap))
                            .collect(),
                        floor,
                        cap: cap.map(|c| top + c),
                        threads,
                        always_critical,
                        horizon: HORIZON,
                    }
                },
            )
    })
}

/// Bids over `resources` with runs from `durations`, first starts from `earliest`, extra room
/// in the window from `slack` and shares of 5% times `units`.
fn bid_spec_in(
    resources: usize,
    units: std::ops::RangeInclusive<u32>,
    durations: std::ops::Range<u32>,
    earliest: std::ops::Range<u64>,
    slack: impl Strategy<Value = u64>,
    good_for: std::ops::Range<u32>,
) -> impl Strategy<Value = BidSpec> {
    (
        0usize..4,
        prop::sample::subsequence((0..resources).collect::<Vec<_>>(), 1..=resources),
        prop::collection::vec(units, resources),
        durations,
        earliest,
        slack,
        1u64..120_000_000,
        good_for,
    )
        .prop_map(|(agent, chosen, shares, duration, earliest, slack, limit, good_for)| BidSpec {
            agent,
            bundle: chosen.into_iter().map(|r| (r, shares[r] * 50_000)).collect(),
            duration,
            earliest,
            slack,
            limit,
            good_for,
        })
}

pub(crate) fn bid_spec(resources: usize) -> impl Strategy<Value = BidSpec> {
    // Mostly short windows (crowded), some past 128 slots (the long-span paths).
    bid_spec_in(resources, 1..=12, 1..6, 0..10, prop_oneof![9 => 0u64..8, 1 => 120u64..160], 1..3)
}

/// Bids with windows across much of the horizon, for books of hundreds of bids.
pub(crate) fn wide_bid_spec(resources: usize) -> impl Strategy<Value = BidSpec> {
    bid_spec_in(resources, 1..=8, 1..30, 0..70, 0u64..100, 1..2)
}

pub(crate) fn agent(i: usize) -> AgentId {
    AgentId::new(&format!("agent-{i}")).unwrap()
}

pub(crate) fn build(s: &Setup) -> Market {
    let m = market_of(s);
    fund(s, &m);
    m
}

/// The market of `s`, before any operation.
pub(crate) fn market_of(s: &Setup) -> Market {
    let names: Vec<String> = (0..s.resources).map(|r| format!("r{r}")).collect();
    let mut b = Market::builder()
        .resources(names.clone())
        .horizon(s.horizon)
        .priority(s.priority)
        .pricing(s.pricing)
        .settlement(s.settlement)
        .clearing_threads(s.threads)
        .always_critical_values(s.always_critical);
    for (r, &p) in s.reserve.iter().enumerate() {
        b = b.reserve(&names[r], Price::from_micros(p));
    }
    b = b.floor(Price::from_micros(s.floor)).cap(s.cap.map(Price::from_micros));
    b.build().unwrap()
}

/// The opening deposits and outages of `s`.
pub(crate) fn fund(s: &Setup, m: &Market) {
    let names: Vec<String> = (0..s.resources).map(|r| format!("r{r}")).collect();
    for (i, &d) in s.deposits.iter().enumerate() {
        m.deposit(&agent(i), Credits::from_micros(d)).unwrap();
    }
    for &(r, from, to, cap) in &s.outages {
        m.set_capacity(&names[r], Slot(from), Slot(to), Capacity::from_micros(cap).unwrap()).unwrap();
    }
}

pub(crate) fn bid(k: usize, spec: &BidSpec, limit: u64) -> Bid {
    let bundle = Bundle::new(
        spec.bundle
            .iter()
            .map(|&(r, s)| (ResourceId::from_index(r).unwrap(), Share::from_micros(s).unwrap())),
    )
    .unwrap();
    Bid::new(
        BidId::new(&format!("b{k}")).unwrap(),
        agent(spec.agent),
        bundle,
        spec.duration,
        Credits::from_micros(limit),
    )
    .window(Slot(spec.earliest), Slot(spec.earliest + u64::from(spec.duration) + spec.slack))
    .good_for(spec.good_for)
}

/// Runs one cycle at `now` with `limits` standing in for the specs' limits; returns the events.
/// `top_up` deposits credits for bid `k`'s agent just before it is submitted.
pub(crate) fn run_cycle(
    s: &Setup,
    specs: &[BidSpec],
    limits: &[u64],
    now: u64,
    top_up: Option<(usize, u64)>,
) -> (Market, Vec<Event>) {
    let m = build(s);
    let mut events = m.subscribe();
    for (k, spec) in specs.iter().enumerate() {
        if let Some((at, amount)) = top_up
            && at == k
        {
            m.deposit(&agent(spec.agent), Credits::from_micros(amount)).unwrap();
        }
        let _ = m.submit(bid(k, spec, limits[k]));
    }
    m.clear(Slot(now)).unwrap();
    let all = events.drain();
    (m, all)
}

/// The reserve price of resource `r`: its reserve, at least the floor.
pub(crate) fn reserve_price(s: &Setup, r: usize) -> u64 {
    s.reserve[r].max(s.floor)
}

pub(crate) fn reserve_of(s: &Setup, spec: &BidSpec) -> u64 {
    let picos: u128 = spec
        .bundle
        .iter()
        .map(|&(r, share)| u128::from(share) * u128::from(reserve_price(s, r)) * u128::from(spec.duration))
        .sum();
    u64::try_from(picos.div_ceil(1_000_000)).unwrap()
}

pub(crate) fn bid_index(id: &str) -> usize {
    id[1..].parse().unwrap()
}

/// One operation of a random run.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Submit(BidSpec),
    Cancel(usize),
    Deposit(usize, u64),
    Transfer(usize, usize, u64),
    Outage(usize, u64, u64, u32),
    Clear(u64),
}

pub(crate) fn op(resources: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => bid_spec(resources).prop_map(Op::Submit),
        1 => (0usize..64).prop_map(Op::Cancel),
        1 => (0usize..4, 1u64..100_000_000).prop_map(|(a, x)| Op::Deposit(a, x)),
        1 => (0usize..4, 0usize..4, 1u64..100_000_000).prop_map(|(a, b, x)| Op::Transfer(a, b, x)),
        1 => (0..resources, 0u64..40, 1u64..10, prop_oneof![Just(0u32), Just(500_000), Just(1_000_000)])
            .prop_map(|(r, from, len, cap)| Op::Outage(r, from, len, cap)),
        3 => (0u64..4).prop_map(Op::Clear),
    ]
}

/// Where a random run is: its market's slot and the bids it has submitted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Run {
    pub(crate) now: u64,
    pub(crate) submitted: usize,
}

impl Run {
    /// Applies `op` to `m` as the invariant tests do (refusals are part of the run).
    pub(crate) fn apply(&mut self, m: &Market, op: &Op) {
        match op {
            Op::Submit(spec) => {
                let mut spec = spec.clone();
                spec.earliest += self.now;
                let _ = m.submit(bid(self.submitted, &spec, spec.limit));
                self.submitted += 1;
            }
            Op::Cancel(k) => {
                let id = BidId::new(&format!("b{}", k % self.submitted.max(1))).unwrap();
                let _ = m.cancel(&agent(k % 4), &id);
            }
            Op::Deposit(a, x) => m.deposit(&agent(*a), Credits::from_micros(*x)).unwrap(),
            Op::Transfer(a, b, x) => {
                let _ = m.transfer(&agent(*a), &agent(*b), Credits::from_micros(*x));
            }
            Op::Outage(r, from, len, cap) => {
                let from = self.now + from;
                let _ = m.set_capacity(
                    &format!("r{r}"),
                    Slot(from),
                    Slot(from + len),
                    Capacity::from_micros(*cap).unwrap(),
                );
            }
            Op::Clear(dt) => {
                self.now += dt;
                m.clear(Slot(self.now)).unwrap();
            }
        }
    }
}
