//! [`Timeline`]: capacity offered and sold per resource per slot, from `now` to the horizon.

use std::ops::Range;

use super::resource::ResourceId;
use super::share::Capacity;
use super::slot::Slot;

/// Capacity and sales of every resource in every slot of `[now, now + horizon)`.
///
/// Kept in a ring per resource: slots behind `now` are dropped as time advances, so memory is
/// bounded by the horizon whatever the market's age. Capacity is full unless a change set a
/// slot range to another value; changes reaching past the ring are remembered and applied as
/// their slots come into view.
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
    /// Ring length: the horizon rounded up to a power of two, so a slot's cell is `slot & mask`.
    mask: u64,
    /// The oldest slot held; the ring holds `[now, now + ring length)`.
    now: u64,
    /// `sold[r * len + (slot & mask)]`: millionths sold of resource `r` in `slot`.
    sold: Vec<u32>,
    /// `capacity[r * len + (slot & mask)]`: millionths offered.
    capacity: Vec<u32>,
    /// Capacity changes in the order they were made, kept while they reach past `now`.
    changes: Vec<CapacityChange>,
}

#[derive(Clone, Copy, Debug)]
struct CapacityChange {
    resource: usize,
    slots: (u64, u64),
    capacity: u32,
}

impl Timeline {
    /// An empty timeline of `resources` resources, holding `horizon` slots from `now`.
    ///
    /// # Panics
    ///
    /// When `resources` or `horizon` is zero, or `horizon` exceeds 2^30 slots.
    pub fn new(resources: usize, horizon: u64, now: Slot) -> Timeline {
        assert!(resources > 0 && horizon > 0 && horizon <= 1 << 30, "bad timeline shape");
        let len = horizon.next_power_of_two();
        let cells = resources * len as usize;
        Timeline {
            resources,
            horizon,
            mask: len - 1,
            now: now.0,
            sold: vec![0; cells],
            capacity: vec![Capacity::FULL.micros(); cells],
            changes: Vec::new(),
        }
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

    fn len(&self) -> u64 {
        self.mask + 1
    }

    fn cell(&self, resource: usize, slot: u64) -> usize {
        resource * self.len() as usize + (slot & self.mask) as usize
    }

    fn held(&self, slot: u64) -> bool {
        slot >= self.now && slot - self.now < self.len()
    }

    /// Moves `now` forward, dropping the slots behind it and opening new ones at the far end.
    /// Moving backwards does nothing.
    pub fn advance(&mut self, now: Slot) {
        let now = now.0;
        if now <= self.now {
            return;
        }
        let len = self.len();
        let old_end = self.now + len;
        // Slots [max(old_end, now), now + len) are new; they reuse the cells of dropped slots.
        let first_new = old_end.max(now);
        let new_end = now + len;
        self.now = now;
        self.changes.retain(|c| c.slots.1 > now);
        for slot in first_new..new_end {
            for r in 0..self.resources {
                let cell = self.cell(r, slot);
                self.sold[cell] = 0;
                self.capacity[cell] = self.scheduled_capacity(r, slot);
            }
        }
    }

    /// The capacity the recorded changes give `slot` of `resource`: the latest change covering
    /// it, or full.
    fn scheduled_capacity(&self, resource: usize, slot: u64) -> u32 {
        self.changes
            .iter()
            .rev()
            .find(|c| c.resource == resource && (c.slots.0..c.slots.1).contains(&slot))
            .map_or(Capacity::FULL.micros(), |c| c.capacity)
    }

    /// Sets the capacity of `resource` in `[from, to)`. Slots behind `now` are ignored; slots
    /// past the ring are remembered until they come into view. Capacity already sold stays sold
    /// even where the new capacity is below it: such slots simply take no new sales.
    pub fn set_capacity(&mut self, resource: ResourceId, from: Slot, to: Slot, capacity: Capacity) {
        let r = resource.index();
        let from = from.0.max(self.now);
        if from >= to.0 {
            return;
        }
        self.changes.push(CapacityChange { resource: r, slots: (from, to.0), capacity: capacity.micros() });
        let end = to.0.min(self.now + self.len());
        for slot in from..end {
            let cell = self.cell(r, slot);
            self.capacity[cell] = capacity.micros();
        }
    }

    /// Millionths offered of `resource` in `slot`.
    pub fn capacity(&self, resource: ResourceId, slot: Slot) -> u32 {
        if self.held(slot.0) {
            self.capacity[self.cell(resource.index(), slot.0)]
        } else if slot.0 < self.now {
            0
        } else {
            self.scheduled_capacity(resource.index(), slot.0)
        }
    }

    /// Millionths sold of `resource` in `slot`.
    pub fn sold(&self, resource: ResourceId, slot: Slot) -> u32 {
        if self.held(slot.0) { self.sold[self.cell(resource.index(), slot.0)] } else { 0 }
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
        for slot in slots {
            assert!(self.held(slot), "slot {slot} is outside the timeline");
            let cell = self.cell(resource.index(), slot);
            self.sold[cell] += share;
        }
    }

    /// Capacity changes still in effect, in the order they were made: `(resource, from, to,
    /// millionths)`, `from` no earlier than `now` (what the timeline holds is the same either way).
    pub(crate) fn changes(&self) -> impl Iterator<Item = (usize, u64, u64, u32)> + '_ {
        self.changes.iter().map(|c| (c.resource, c.slots.0.max(self.now), c.slots.1, c.capacity))
    }

    /// Sales as runs of equal consecutive slots: `(resource, from, to, millionths sold)`, by
    /// resource then slot, unsold slots left out.
    pub(crate) fn sold_runs(&self) -> Vec<(usize, u64, u64, u32)> {
        let mut runs: Vec<(usize, u64, u64, u32)> = Vec::new();
        for r in 0..self.resources {
            for slot in self.now..self.now + self.len() {
                let sold = self.sold[self.cell(r, slot)];
                match runs.last_mut() {
                    Some(run) if run.0 == r && run.2 == slot && run.3 == sold => run.2 = slot + 1,
                    _ if sold == 0 => {}
                    _ => runs.push((r, slot, slot + 1, sold)),
                }
            }
        }
        runs
    }

    /// Every slot strictly inside `slots` where some resource's free capacity differs from the
    /// slot before, ascending.
    pub(crate) fn breaks(&self, slots: Range<u64>, out: &mut Vec<u64>) {
        out.clear();
        for t in slots.start + 1..slots.end {
            let id = |r: usize| ResourceId(r as u8);
            if (0..self.resources).any(|r| self.free(id(r), Slot(t)) != self.free(id(r), Slot(t - 1))) {
                out.push(t);
            }
        }
    }

    /// Writes the free capacity of each row `[bounds[i], bounds[i + 1])` into `out`, row-major
    /// (`out[i * resources + r]`), read at the row's first slot: free capacity is the same
    /// throughout a row.
    pub(crate) fn free_rows(&self, bounds: &[u64], out: &mut Vec<i32>) {
        out.clear();
        for &slot in &bounds[..bounds.len() - 1] {
            for r in 0..self.resources {
                out.push(self.free(ResourceId(r as u8), Slot(slot)) as i32);
            }
        }
    }

    /// Writes the free capacity of `slots` into `out`, slot-major (`out[(t - start) * resources
    /// + r]`), the layout the clearing scans.
    pub(crate) fn free_grid(&self, slots: Range<u64>, out: &mut Vec<i32>) {
        out.clear();
        out.reserve((slots.end - slots.start) as usize * self.resources);
        for slot in slots {
            for r in 0..self.resources {
                let id = ResourceId(r as u8);
                out.push(self.free(id, Slot(slot)) as i32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
