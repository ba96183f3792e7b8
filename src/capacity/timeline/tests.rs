//! The timeline against a dense model of every slot.

use proptest::prelude::*;

use super::*;

const CPU: ResourceId = ResourceId(0);
const MEM: ResourceId = ResourceId(1);

#[test]
fn sells_and_frees() {
    let mut t = Timeline::new(2, 8, Slot(0));
    t.sell(CPU, 0..4, 700_000);
    assert_eq!(t.free(CPU, Slot(3)), 300_000);
    assert_eq!(t.free(CPU, Slot(4)), 1_000_000);
    assert_eq!(t.free(MEM, Slot(0)), 1_000_000);
}

#[test]
fn advancing_drops_the_past_and_reuses_cells() {
    let mut t = Timeline::new(1, 8, Slot(0));
    t.sell(CPU, 0..8, 500_000);
    t.advance(Slot(5));
    assert_eq!(t.free(CPU, Slot(5)), 500_000);
    // Slots 8..13 reuse the cells of 0..5, which must come back empty.
    assert_eq!(t.free(CPU, Slot(9)), 1_000_000);
    assert_eq!(t.sold(CPU, Slot(2)), 0);
    t.advance(Slot(100));
    assert_eq!(t.free(CPU, Slot(100)), 1_000_000);
}

#[test]
fn capacity_changes_reach_past_the_ring() {
    let mut t = Timeline::new(1, 4, Slot(0));
    t.set_capacity(CPU, Slot(2), Slot(10), Capacity::from_micros(250_000).unwrap());
    assert_eq!(t.capacity(CPU, Slot(1)), 1_000_000);
    assert_eq!(t.capacity(CPU, Slot(3)), 250_000);
    assert_eq!(t.capacity(CPU, Slot(9)), 250_000);
    t.advance(Slot(7));
    assert_eq!(t.capacity(CPU, Slot(9)), 250_000);
    assert_eq!(t.capacity(CPU, Slot(10)), 1_000_000);
}

#[test]
fn outage_below_sales_keeps_sales() {
    let mut t = Timeline::new(1, 4, Slot(0));
    t.sell(CPU, 0..2, 600_000);
    t.set_capacity(CPU, Slot(0), Slot(2), Capacity::NONE);
    assert_eq!(t.sold(CPU, Slot(1)), 600_000);
    assert_eq!(t.free(CPU, Slot(1)), -600_000);
}

#[test]
fn grid_is_slot_major() {
    let mut t = Timeline::new(2, 4, Slot(0));
    t.sell(MEM, 1..2, 100_000);
    let mut g = Vec::new();
    t.free_grid(0..2, &mut g);
    assert_eq!(g, vec![1_000_000, 1_000_000, 1_000_000, 900_000]);
}

#[test]
fn longest_horizon_is_cheap() {
    let mut t = Timeline::new(4, 1 << 30, Slot(0));
    t.sell(CPU, 5..6, 300_000);
    assert_eq!(t.free(CPU, Slot(5)), 700_000);
    assert_eq!(t.free(CPU, Slot(6)), 1_000_000);
    t.sell(MEM, (1 << 30) - 1..1 << 30, 100_000);
    assert_eq!(t.free(MEM, Slot((1 << 30) - 1)), 900_000);
    assert_eq!(t.runs.iter().map(BTreeMap::len).sum::<usize>(), 3 + 3 + 1 + 1);
    let mut g = Vec::new();
    t.free_grid(0..3600, &mut g);
    assert_eq!(g.len(), 3600 * 4);
    assert_eq!(t.sold_runs(), vec![(0, 5, 6, 300_000), (1, (1 << 30) - 1, 1 << 30, 100_000)]);
}

#[test]
#[should_panic(expected = "slot 8 is outside the timeline")]
fn selling_past_the_ring_panics() {
    let mut t = Timeline::new(1, 5, Slot(0));
    t.sell(CPU, 6..9, 1);
}

#[test]
#[should_panic(expected = "slot 2 is outside the timeline")]
fn selling_behind_now_panics() {
    let mut t = Timeline::new(1, 5, Slot(3));
    t.sell(CPU, 2..4, 1);
}

#[test]
fn breaks_and_rows_read_the_runs() {
    let mut t = Timeline::new(2, 16, Slot(4));
    t.sell(CPU, 6..10, 500_000);
    t.set_capacity(CPU, Slot(8), Slot(12), Capacity::from_micros(500_000).unwrap());
    t.sell(MEM, 9..11, 100_000);
    let mut b = Vec::new();
    t.breaks(0..20, &mut b);
    // Behind now nothing is free; CPU: 6 (half), 8 (none), 10 (half), 12 (full); MEM: 9, 11.
    assert_eq!(b, vec![4, 6, 8, 9, 10, 11, 12]);
    let bounds: Vec<u64> = [0].into_iter().chain(b.iter().copied()).chain([20]).collect();
    let mut rows = Vec::new();
    t.free_rows(&bounds, &mut rows);
    #[rustfmt::skip]
    assert_eq!(rows, vec![
        0, 0,
        1_000_000, 1_000_000,
        500_000, 1_000_000,
        0, 1_000_000,
        0, 900_000,
        500_000, 900_000,
        500_000, 1_000_000,
        1_000_000, 1_000_000,
    ]);
    t.breaks(6..8, &mut b);
    assert!(b.is_empty());
    t.breaks(0..3, &mut b);
    assert!(b.is_empty());
}

/// The timeline as it was: a dense cell per slot, over every slot the test reaches.
struct Dense {
    now: u64,
    len: u64,
    capacity: Vec<Vec<u32>>,
    sold: Vec<Vec<u32>>,
}

const SLOTS: usize = 8192;

impl Dense {
    fn new(resources: usize, horizon: u64, now: u64) -> Dense {
        Dense {
            now,
            len: horizon.next_power_of_two(),
            capacity: vec![vec![1_000_000; SLOTS]; resources],
            sold: vec![vec![0; SLOTS]; resources],
        }
    }

    fn capacity(&self, r: usize, t: u64) -> u32 {
        if t < self.now { 0 } else { self.capacity[r][t as usize] }
    }

    fn sold(&self, r: usize, t: u64) -> u32 {
        if t < self.now || t >= self.now + self.len { 0 } else { self.sold[r][t as usize] }
    }

    fn free(&self, r: usize, t: u64) -> i64 {
        i64::from(self.capacity(r, t)) - i64::from(self.sold(r, t))
    }

    fn sold_runs(&self) -> Vec<(usize, u64, u64, u32)> {
        let mut runs: Vec<(usize, u64, u64, u32)> = Vec::new();
        for r in 0..self.sold.len() {
            for slot in self.now..self.now + self.len {
                let sold = self.sold(r, slot);
                match runs.last_mut() {
                    Some(run) if run.0 == r && run.2 == slot && run.3 == sold => run.2 = slot + 1,
                    _ if sold == 0 => {}
                    _ => runs.push((r, slot, slot + 1, sold)),
                }
            }
        }
        runs
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Capacity of resource `.0` in `[now + .1 - 20, now + .2 - 20)`, millionths `.3`.
    SetCapacity(usize, u64, u64, u32),
    /// Sale of resource `.0` from `.1` slots past now (within the ring), `.2` slots long.
    Sell(usize, u64, u64, u32),
    /// `now` moves by `.0` (backwards when negative: nothing happens).
    Advance(i64),
}

fn op(resources: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..resources, 0..400u64, 0..400u64, 0..5u32)
            .prop_map(|(r, a, b, c)| Op::SetCapacity(r, a, b, c * 250_000)),
        3 => (0..resources, 0..256u64, 0..80u64, 0..4u32)
            .prop_map(|(r, a, n, s)| Op::Sell(r, a, n, s * 150_000)),
        1 => (-10..60i64).prop_map(Op::Advance),
    ]
}

fn check_invariants(t: &Timeline) {
    for runs in &t.runs {
        assert_eq!(runs.keys().next(), Some(&t.now), "the runs start at now");
        let cells: Vec<Cell> = runs.values().copied().collect();
        assert!(cells.windows(2).all(|w| w[0] != w[1]), "neighbouring runs differ: {runs:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn runs_agree_with_dense_cells(
        resources in 1..4usize,
        horizon in 64..200u64,
        start in 0..50u64,
        ops in proptest::collection::vec(op(3), 0..60),
        window in (0..600u64, 0..600u64),
    ) {
        let mut t = Timeline::new(resources, horizon, Slot(start));
        let mut d = Dense::new(resources, horizon, start);
        for op in ops {
            match op {
                Op::SetCapacity(r, a, b, c) => {
                    let r = r % resources;
                    let (from, to) = ((d.now + a).saturating_sub(20), (d.now + b).saturating_sub(20));
                    let capacity = Capacity::from_micros(c).unwrap();
                    t.set_capacity(ResourceId(r as u8), Slot(from), Slot(to), capacity);
                    for slot in from.max(d.now)..to {
                        d.capacity[r][slot as usize] = c;
                    }
                }
                Op::Sell(r, a, n, s) => {
                    let r = r % resources;
                    let from = d.now + a % d.len;
                    let to = (from + n).min(d.now + d.len);
                    t.sell(ResourceId(r as u8), from..to, s);
                    for slot in from..to {
                        d.sold[r][slot as usize] += s;
                    }
                }
                Op::Advance(by) => {
                    let now = d.now.saturating_add_signed(by);
                    t.advance(Slot(now));
                    d.now = d.now.max(now);
                }
            }
            check_invariants(&t);
        }
        prop_assert_eq!(t.now(), Slot(d.now));
        let (lo, hi) = (d.now.saturating_sub(10), d.now + d.len + 150);
        for r in 0..resources {
            let id = ResourceId(r as u8);
            for slot in lo..hi {
                prop_assert_eq!(t.capacity(id, Slot(slot)), d.capacity(r, slot), "capacity {} {}", r, slot);
                prop_assert_eq!(t.sold(id, Slot(slot)), d.sold(r, slot), "sold {} {}", r, slot);
                prop_assert_eq!(t.free(id, Slot(slot)), d.free(r, slot), "free {} {}", r, slot);
            }
        }
        prop_assert_eq!(t.sold_runs(), d.sold_runs());
        let sub = {
            let (a, b) = (window.0.min(window.1), window.0.max(window.1));
            (d.now.saturating_sub(100) + a)..(d.now.saturating_sub(100) + b)
        };
        for slots in [lo..hi, sub] {
            let mut grid = Vec::new();
            t.free_grid(slots.clone(), &mut grid);
            let dense: Vec<i32> =
                slots.clone().flat_map(|s| (0..resources).map(move |r| (s, r))).map(|(s, r)| d.free(r, s) as i32).collect();
            prop_assert_eq!(&grid, &dense);
            let mut breaks = vec![7];
            t.breaks(slots.clone(), &mut breaks);
            let expected: Vec<u64> = (slots.start + 1..slots.end)
                .filter(|&s| (0..resources).any(|r| d.free(r, s - 1) != d.free(r, s)))
                .collect();
            prop_assert_eq!(&breaks, &expected);
            if slots.is_empty() {
                continue;
            }
            let bounds: Vec<u64> = [slots.start].into_iter().chain(breaks).chain([slots.end]).collect();
            let mut rows = vec![7];
            t.free_rows(&bounds, &mut rows);
            let dense: Vec<i32> = bounds[..bounds.len() - 1]
                .iter()
                .flat_map(|&s| (0..resources).map(move |r| (s, r)))
                .map(|(s, r)| d.free(r, s) as i32)
                .collect();
            prop_assert_eq!(&rows, &dense);
        }
    }

    /// Many sales at once leave exactly the runs the same sales one by one leave.
    #[test]
    fn selling_all_at_once_is_selling_one_by_one(
        ops in proptest::collection::vec(op(2), 0..30),
        sales in proptest::collection::vec((0..2usize, 0..256u64, 0..80u64, 0..4u32), 0..40),
    ) {
        let mut one = Timeline::new(2, 200, Slot(5));
        for op in ops {
            match op {
                Op::SetCapacity(r, a, b, c) => {
                    one.set_capacity(ResourceId(r as u8), Slot(a), Slot(b), Capacity::from_micros(c).unwrap());
                }
                Op::Sell(r, a, n, s) => {
                    let from = one.now + a;
                    one.sell(ResourceId(r as u8), from..(from + n).min(one.now + one.len), s);
                }
                Op::Advance(by) => one.advance(Slot(one.now.saturating_add_signed(by))),
            }
        }
        let mut all = one.clone();
        let mut batch = vec![Vec::new(); 2];
        for (r, a, n, s) in sales {
            let from = one.now + a;
            let run = from..(from + n).min(one.now + one.len);
            one.sell(ResourceId(r as u8), run.clone(), s * 100_000);
            batch[r].push((run.start, run.end, s * 100_000));
        }
        for (r, sales) in batch.iter().enumerate() {
            all.sell_all(ResourceId(r as u8), sales);
        }
        check_invariants(&all);
        prop_assert_eq!(&all.runs, &one.runs);
    }
}
