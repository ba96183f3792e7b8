//! [`Timeline`]: capacity offered and sold per resource per slot, from `now` to the horizon.

use std::collections::BTreeMap;
use std::ops::{Bound, Range};

use super::resource::ResourceId;
use super::share::Capacity;
use super::slot::Slot;

/// Capacity and sales of every resource in every slot of `[now, now + horizon)`.
///
/// Kept as runs per resource: from `now` on, a sorted map from the first slot of each run of
/// equal capacity and sales to those values, the last run lasting forever. Runs behind `now`
/// are dropped as time advances, and neighbouring runs that become equal are merged, so memory
/// and time grow with the number of distinct capacity changes and sales, not with slots.
/// Capacity is full unless a change set a slot range to another value. Sales are taken in the
/// ring, `[now, now + horizon.next_power_of_two())`.
///
/// # Examples
///
/// ```
/// use capacity_auction::{Capacity, ResourceId, Slot, Timeline};
///
/// let mut t = Timeline::new(2, 100, Slot(0));
/// let cpu = ResourceId::from_index(0).unwrap();
/// t.set_capacity(cpu, Slot(10), Slot(20), "0.5".parse()?);
/// t.sell(cpu, 12..15, 300_000);
/// assert_eq!(t.free(cpu, Slot(12)), 200_000);
/// t.advance(Slot(50));
/// assert_eq!(t.now(), Slot(50));
/// # Ok::<(), capacity_auction::UnitError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Timeline {
    resources: usize,
    horizon: u64,
    /// Ring length: the horizon rounded up to a power of two. Sales are taken in
    /// `[now, now + len)`; every slot past it is unsold.
    len: u64,
    /// The oldest slot held.
    now: u64,
    /// Per resource, the runs from `now` on: `runs[r][&from]` holds the slots from `from` to the
    /// next key (the last run never ends). The first key is always `now`, and neighbouring runs
    /// always differ.
    runs: Vec<BTreeMap<u64, Cell>>,
    /// Capacity changes in the order they were made, kept while they reach past `now`.
    changes: Vec<CapacityChange>,
    /// Capacity settings made so far: between two cuts with the same count, no slot's free
    /// capacity grew.
    settings: u64,
}

/// What a run of slots holds: millionths offered and sold in each of its slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cell {
    capacity: u32,
    sold: u32,
}

impl Cell {
    fn free(self) -> i64 {
        i64::from(self.capacity) - i64::from(self.sold)
    }
}

#[derive(Clone, Copy, Debug)]
struct CapacityChange {
    resource: usize,
    slots: (u64, u64),
    capacity: u32,
}

/// The first slot and the values of the run of `runs` covering `slot`, which is at or past the
/// first key.
fn covering(runs: &BTreeMap<u64, Cell>, slot: u64) -> (u64, Cell) {
    let (&from, &cell) = runs.range(..=slot).next_back().expect("the runs start at now");
    (from, cell)
}

/// Makes `at` the first slot of a run, splitting the run covering it.
fn split(runs: &mut BTreeMap<u64, Cell>, at: u64) {
    let (from, cell) = covering(runs, at);
    if from != at {
        runs.insert(at, cell);
    }
}

/// Merges the run starting at `at`, if any, into the run before it when the two are equal.
fn merge(runs: &mut BTreeMap<u64, Cell>, at: u64) {
    let Some(&cell) = runs.get(&at) else { return };
    if runs.range(..at).next_back().is_some_and(|(_, &before)| before == cell) {
        runs.remove(&at);
    }
}

impl Timeline {
    /// An empty timeline of `resources` resources, holding `horizon` slots from `now`.
    ///
    /// # Panics
    ///
    /// When `resources` or `horizon` is zero, or `horizon` exceeds 2^30 slots.
    pub fn new(resources: usize, horizon: u64, now: Slot) -> Timeline {
        assert!(resources > 0 && horizon > 0 && horizon <= 1 << 30, "bad timeline shape");
        let full = Cell { capacity: Capacity::FULL.micros(), sold: 0 };
        Timeline {
            resources,
            horizon,
            len: horizon.next_power_of_two(),
            now: now.0,
            runs: vec![BTreeMap::from([(now.0, full)]); resources],
            changes: Vec::new(),
            settings: 0,
        }
    }

    /// How many times capacity was set so far. Nothing else raises a slot's free capacity (sales
    /// only lower it), so while this count stays the same, free capacity only shrinks.
    pub(crate) fn settings(&self) -> u64 {
        self.settings
    }

    /// The oldest slot held.
    pub fn now(&self) -> Slot {
        Slot(self.now)
    }

    /// Slots ahead of `now` that bids may reach.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// How many resources the timeline tracks.
    pub fn resources(&self) -> usize {
        self.resources
    }

    fn held(&self, slot: u64) -> bool {
        slot >= self.now && slot - self.now < self.len
    }

    /// Moves `now` forward, dropping the slots behind it and opening new ones at the far end.
    /// Moving backwards does nothing.
    pub fn advance(&mut self, now: Slot) {
        let now = now.0;
        if now <= self.now {
            return;
        }
        self.now = now;
        self.changes.retain(|c| c.slots.1 > now);
        // Slots opening at the far end are unsold and have their capacity already: runs reach
        // to infinity, and sales never reach past the ring.
        for runs in &mut self.runs {
            let (_, cell) = covering(runs, now);
            let mut kept = runs.split_off(&now);
            kept.entry(now).or_insert(cell);
            *runs = kept;
        }
    }

    /// Sets the capacity of `resource` in `[from, to)`. Slots behind `now` are ignored; slots
    /// past the ring are remembered until they come into view. Capacity already sold stays sold
    /// even where the new capacity is below it: such slots simply take no new sales.
    pub fn set_capacity(&mut self, resource: ResourceId, from: Slot, to: Slot, capacity: Capacity) {
        self.settings += 1;
        let r = resource.index();
        let from = from.0.max(self.now);
        let to = to.0;
        if from >= to {
            return;
        }
        let capacity = capacity.micros();
        self.changes.push(CapacityChange { resource: r, slots: (from, to), capacity });
        let runs = &mut self.runs[r];
        split(runs, from);
        split(runs, to);
        // The runs inside now differ in sales only: merge those selling the same.
        let mut merged = Vec::new();
        let mut before = None;
        for (&start, cell) in runs.range_mut(from..to) {
            cell.capacity = capacity;
            if before == Some(cell.sold) {
                merged.push(start);
            }
            before = Some(cell.sold);
        }
        for start in merged {
            runs.remove(&start);
        }
        merge(runs, to);
        merge(runs, from);
    }

    /// Millionths offered of `resource` in `slot`.
    pub fn capacity(&self, resource: ResourceId, slot: Slot) -> u32 {
        if slot.0 < self.now { 0 } else { covering(&self.runs[resource.index()], slot.0).1.capacity }
    }

    /// Millionths sold of `resource` in `slot`.
    pub fn sold(&self, resource: ResourceId, slot: Slot) -> u32 {
        if self.held(slot.0) { covering(&self.runs[resource.index()], slot.0).1.sold } else { 0 }
    }

    /// Millionths still for sale: capacity minus sold, negative after a cut below sales.
    pub fn free(&self, resource: ResourceId, slot: Slot) -> i64 {
        i64::from(self.capacity(resource, slot)) - i64::from(self.sold(resource, slot))
    }

    /// Records the sale of `share` millionths of `resource` in every slot of `slots`.
    ///
    /// # Panics
    ///
    /// When a slot is outside the ring. The caller checked the sale fits.
    pub fn sell(&mut self, resource: ResourceId, slots: Range<u64>, share: u32) {
        if slots.is_empty() {
            return;
        }
        self.check_held(&slots);
        if share == 0 {
            return;
        }
        let (start, end) = (slots.start, slots.end);
        let runs = &mut self.runs[resource.index()];
        // The run covering `start`, and the one before `start` once `start` begins a run.
        let mut back = runs.range(..=start);
        let (&first, &cell) = back.next_back().expect("the runs start at now");
        let before = if first == start { back.next_back().map(|(_, &c)| c) } else { Some(cell) };
        if first != start {
            runs.insert(start, cell);
        }
        // Adding the same share keeps the runs inside distinct: only the ends may merge.
        let (mut head, mut last_old, mut last_new, mut at_end) = (None, cell, cell, None);
        for (&from, cell) in runs.range_mut(start..=end) {
            if from == end {
                at_end = Some(*cell);
                break;
            }
            last_old = *cell;
            cell.sold += share;
            last_new = *cell;
            head.get_or_insert(last_new);
        }
        match at_end {
            // The last run sold reached past `end`: its tail keeps what it held.
            None => {
                runs.insert(end, last_old);
            }
            Some(after) if after == last_new => {
                runs.remove(&end);
            }
            Some(_) => {}
        }
        if before.is_some() && before == head {
            runs.remove(&start);
        }
    }

    /// Panics with the first slot of `slots` (not empty) outside the ring, if any.
    fn check_held(&self, slots: &Range<u64>) {
        if slots.start < self.now || slots.end - self.now > self.len {
            let slot = if slots.start < self.now {
                slots.start
            } else {
                slots.start.max(self.now.saturating_add(self.len))
            };
            panic!("slot {slot} is outside the timeline");
        }
    }

    /// Records many sales of `resource` at once, `(from, to, millionths)` each, in one pass over
    /// the runs they reach: what a clearing cycle sold, without a walk of the runs per sale.
    ///
    /// # Panics
    ///
    /// When a slot is outside the ring, as [`sell`](Timeline::sell).
    pub(crate) fn sell_all(&mut self, resource: ResourceId, sales: &[(u64, u64, u32)]) {
        // Where the amount sold changes: +share at a sale's first slot, -share at its end.
        let mut steps: Vec<(u64, i64)> = Vec::with_capacity(2 * sales.len());
        for &(from, to, share) in sales.iter().filter(|&&(from, to, share)| from < to && share > 0) {
            self.check_held(&(from..to));
            steps.extend([(from, i64::from(share)), (to, -i64::from(share))]);
        }
        if steps.is_empty() {
            return;
        }
        steps.sort_unstable_by_key(|&(slot, _)| slot);
        let (lo, hi) = (steps[0].0, steps[steps.len() - 1].0);
        let runs = &mut self.runs[resource.index()];
        split(runs, lo);
        split(runs, hi);
        let mut within = runs.split_off(&lo);
        let mut after = within.split_off(&hi);
        // Walk the old runs of [lo, hi) and the steps together, every bound of either a run.
        let (mut old, mut steps) = (within.into_iter().peekable(), steps.into_iter().peekable());
        let (mut cell, mut added) = (Cell { capacity: 0, sold: 0 }, 0i64);
        let mut last = runs.iter().next_back().map(|(_, &c)| c);
        let mut sold = Vec::new();
        loop {
            let at = match (old.peek(), steps.peek()) {
                (Some(&(a, _)), Some(&(b, _))) => a.min(b),
                (Some(&(a, _)), None) => a,
                (None, Some(&(b, _))) => b,
                (None, None) => break,
            };
            if old.peek().is_some_and(|&(a, _)| a == at) {
                cell = old.next().expect("peeked").1;
            }
            while let Some((_, step)) = steps.next_if(|&(b, _)| b == at) {
                added += step;
            }
            if at >= hi {
                break;
            }
            let now =
                Cell { sold: u32::try_from(i64::from(cell.sold) + added).expect("sales within u32"), ..cell };
            if last != Some(now) {
                sold.push((at, now));
                last = Some(now);
            }
        }
        // Built in bulk from sorted runs, then joined: linear, not an insert per run.
        runs.append(&mut sold.into_iter().collect());
        runs.append(&mut after);
        merge(runs, hi);
    }

    /// Capacity changes still in effect, in the order they were made: `(resource, from, to,
    /// millionths)`, `from` no earlier than `now` (what the timeline holds is the same either way).
    pub(crate) fn changes(&self) -> impl Iterator<Item = (usize, u64, u64, u32)> + '_ {
        self.changes.iter().map(|c| (c.resource, c.slots.0.max(self.now), c.slots.1, c.capacity))
    }

    /// Sales as runs of equal consecutive slots: `(resource, from, to, millionths sold)`, by
    /// resource then slot, unsold slots left out.
    pub(crate) fn sold_runs(&self) -> Vec<(usize, u64, u64, u32)> {
        let mut out: Vec<(usize, u64, u64, u32)> = Vec::new();
        let end = self.now.saturating_add(self.len);
        for (r, runs) in self.runs.iter().enumerate() {
            let mut iter = runs.iter().peekable();
            while let Some((&from, cell)) = iter.next() {
                // Nothing is sold past the ring, so a run selling anything ends inside it.
                let to = iter.peek().map_or(end, |&(&next, _)| next.min(end));
                if from >= to {
                    break;
                }
                match out.last_mut() {
                    Some(run) if run.0 == r && run.2 == from && run.3 == cell.sold => run.2 = to,
                    _ if cell.sold == 0 => {}
                    _ => out.push((r, from, to, cell.sold)),
                }
            }
        }
        out
    }

    /// The runs of `resource` that cover `from` onwards, the first one starting at or before
    /// `from` (which is at or past `now`).
    fn runs_from(&self, resource: usize, from: u64) -> impl Iterator<Item = (u64, Cell)> + '_ {
        let runs = &self.runs[resource];
        let (first, _) = covering(runs, from);
        runs.range(first..).map(|(&start, &cell)| (start, cell))
    }

    /// Writes the free capacity of `slots` into `out`, slot-major (`out[(t - start) * resources
    /// + r]`), the layout the clearing scans.
    pub(crate) fn free_grid(&self, slots: Range<u64>, out: &mut Vec<i32>) {
        out.clear();
        let n = slots.end.saturating_sub(slots.start) as usize;
        // Slots behind `now` have nothing free.
        out.resize(n * self.resources, 0);
        let lo = slots.start.max(self.now);
        if lo >= slots.end {
            return;
        }
        for r in 0..self.resources {
            let mut iter = self.runs_from(r, lo).peekable();
            while let Some((start, cell)) = iter.next() {
                if start >= slots.end {
                    break;
                }
                let end = iter.peek().map_or(slots.end, |&(next, _)| next.min(slots.end));
                let free = cell.free() as i32;
                let first = (start.max(lo) - slots.start) as usize;
                let last = (end - slots.start) as usize;
                for cell in out[first * self.resources..last * self.resources]
                    .iter_mut()
                    .skip(r)
                    .step_by(self.resources)
                {
                    *cell = free;
                }
            }
        }
    }

    /// Clears `out` and pushes, ascending and once each, every slot `s` with `slots.start < s <
    /// slots.end` where the free capacity of some resource differs between `s - 1` and `s`.
    pub(crate) fn breaks(&self, slots: Range<u64>, out: &mut Vec<u64>) {
        out.clear();
        let lo = slots.start.max(self.now);
        if lo >= slots.end {
            // Nothing is free anywhere in the range.
            return;
        }
        for r in 0..self.resources {
            // Slots behind `now` have nothing free.
            let mut before = (slots.start < self.now).then_some(0);
            for (start, cell) in self.runs_from(r, lo) {
                if start >= slots.end {
                    break;
                }
                let free = cell.free();
                if before.is_some_and(|b| b != free) {
                    out.push(start.max(lo));
                }
                before = Some(free);
            }
        }
        // Each resource's breaks are ascending already.
        if self.resources > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Clears `out` and writes the free capacity of each row `[bounds[i], bounds[i + 1])`,
    /// row-major: `out[i * resources + r]` is resource `r`'s free capacity at `bounds[i]`.
    /// `bounds` is ascending; the caller knows the free capacity is the same all along a row.
    pub(crate) fn free_rows(&self, bounds: &[u64], out: &mut Vec<i32>) {
        out.clear();
        let rows = bounds.len().saturating_sub(1);
        // Rows behind `now` have nothing free.
        out.resize(rows * self.resources, 0);
        let held = bounds[..rows].partition_point(|&b| b < self.now);
        if held == rows {
            return;
        }
        for r in 0..self.resources {
            let runs = &self.runs[r];
            let (first, mut cell) = covering(runs, bounds[held]);
            let mut next = runs.range((Bound::Excluded(first), Bound::Unbounded)).peekable();
            for (i, &b) in bounds[..rows].iter().enumerate().skip(held) {
                while let Some((_, &later)) = next.next_if(|&(&start, _)| start <= b) {
                    cell = later;
                }
                out[i * self.resources + r] = cell.free() as i32;
            }
        }
    }
}

#[cfg(test)]
mod tests;
