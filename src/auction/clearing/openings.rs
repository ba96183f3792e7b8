//! Losers indexed by what could open them.
//!
//! A loser failed at every start in the real run, each start for the rows of its run that were
//! too full. In a counterfactual it can win only if, for some start, every one of those rows has
//! more free capacity than the real run had there (is *raised*). So it needs at least `k` raised
//! rows within its span, `k` being the fewest rows that blocked any one of its starts; until the
//! buckets its span reaches hold that many, visiting it is wasted. On a crowded book nine
//! visits in ten are such losers, and raised rows are few and short-lived (a freed cell is soon
//! taken again), so a replay that visits a loser only while its buckets hold enough raised rows
//! meets a fraction of them.
//!
//! Losers are listed by the first bucket their span reaches and by a *class* of their `k`. A
//! replay keeps, per bucket, how many of its rows are raised, and per first bucket the raised
//! rows of the buckets its losers reach; a list is *open* while that sum reaches its class's
//! least `k`, and a scan merges the open lists from where it stands. A list opened late starts at
//! the scan's position: a loser passed while its list was shut had too few raised rows at its
//! turn to win.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::span::{Visit, buckets_of};

/// Classes of the fewest blocking rows `k`: class `c` holds `CLASS_LEAST[c] <= k <
/// CLASS_LEAST[c + 1]`, steps of about √2 so a list opens at no less than 70% of what its
/// losers need.
const CLASS_LEAST: [u16; 12] = [1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64];
pub(super) const CLASSES: usize = CLASS_LEAST.len();

/// Most buckets past its first that a listed loser's span reaches: a tracked span has at most
/// 128 rows.
const MAX_REACH: usize = 2;

/// The fewest rows of `blocked` (bits of a span `width` rows wide) within any run of `duration`
/// rows, if the span holds a run at all.
pub(super) fn fewest_blocking(blocked: u128, width: u64, duration: u64) -> Option<u32> {
    if duration == 0 || duration > width || width > 128 {
        return None;
    }
    let run = if duration >= 128 { u128::MAX } else { (1u128 << duration) - 1 };
    (0..=width - duration).map(|s| (blocked & run << s).count_ones()).min()
}

fn class_of(k: u32) -> usize {
    CLASS_LEAST.partition_point(|&least| u32::from(least) <= k) - 1
}

/// How many classes open with `raised` rows.
fn open_classes(raised: u32) -> usize {
    CLASS_LEAST.partition_point(|&least| u32::from(least) <= raised)
}

/// The listed losers: list `bucket * CLASSES + class` is `visits[at[l]..at[l + 1]]`, in
/// clearing order, with its positions packed alongside.
#[derive(Debug, Default)]
pub(super) struct Openings {
    at: Vec<u32>,
    visits: Vec<Visit>,
    positions: Vec<u32>,
    /// Per first bucket, how many buckets past it its losers' spans reach.
    reach: Vec<u8>,
}

impl Openings {
    /// Lists `losers` (each a record, in clearing order, with its fewest blocking rows) over
    /// `buckets` buckets.
    pub(super) fn new(buckets: usize, losers: &[(Visit, u32)]) -> Openings {
        let list = |v: &Visit, k: u32| buckets_of(0, &v.rows()).start * CLASSES + class_of(k);
        let mut at = vec![0u32; buckets * CLASSES + 1];
        let mut reach = vec![0u8; buckets];
        for (v, k) in losers {
            at[list(v, *k) + 1] += 1;
            let reached = buckets_of(0, &v.rows());
            debug_assert!(reached.len() <= MAX_REACH + 1);
            reach[reached.start] = reach[reached.start].max((reached.len() - 1) as u8);
        }
        for l in 0..buckets * CLASSES {
            at[l + 1] += at[l];
        }
        let mut fill = at.clone();
        let mut visits = losers.first().map_or_else(Vec::new, |&(v, _)| vec![v; losers.len()]);
        for (v, k) in losers {
            let l = list(v, *k);
            visits[fill[l] as usize] = *v;
            fill[l] += 1;
        }
        let positions = visits.iter().map(|v| v.pos).collect();
        Openings { at, visits, positions, reach }
    }

    fn buckets(&self) -> usize {
        self.reach.len()
    }

    /// The index of list `l`'s first loser at position `next` or later, if any.
    fn first_from(&self, l: usize, next: usize) -> Option<usize> {
        let (from, end) = (self.at[l] as usize, self.at[l + 1] as usize);
        let at = from + self.positions[from..end].partition_point(|&pos| (pos as usize) < next);
        (at < end).then_some(at)
    }
}

/// An open list's place: the position and index of its next record, and which opening of the
/// list it belongs to (a list shut and opened again starts anew; its old place is dropped when
/// met).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Head {
    pos: u32,
    at: u32,
    list: u32,
    opening: u32,
}

/// A replay's view of the open lists, kept across replays so nothing is allocated per winner.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Per bucket, its raised rows.
    raised: Vec<u8>,
    /// Per first bucket, the raised rows of the buckets its losers reach.
    sum: Vec<u16>,
    /// Per first bucket, how many of its classes are open.
    open: Vec<u8>,
    /// Buckets whose raised rows are not zero, to reset.
    touched: Vec<usize>,
    /// Per list, how many times it has been opened.
    openings: Vec<u32>,
    /// The open lists' places, least position first.
    heads: BinaryHeap<Reverse<Head>>,
}

impl Live {
    /// Starts a replay over `openings` with no row raised.
    pub(super) fn reset(&mut self, openings: &Openings) {
        let n = openings.buckets();
        if self.raised.len() != n {
            *self = Live {
                raised: vec![0; n],
                sum: vec![0; n],
                open: vec![0; n],
                openings: vec![0; n * CLASSES],
                ..Live::default()
            };
        }
        for j in self.touched.drain(..) {
            self.raised[j] = 0;
            for b in j.saturating_sub(MAX_REACH)..=j {
                (self.sum[b], self.open[b]) = (0, 0);
            }
        }
        self.heads.clear();
    }

    fn is_open(&self, list: u32) -> bool {
        let (b, c) = (list as usize / CLASSES, list as usize % CLASSES);
        c < usize::from(self.open[b])
    }

    /// Takes the raised rows of the buckets `rows` reach from `raised_in(bucket)`, opening and
    /// shutting lists; lists opened start at position `next`.
    pub(super) fn update(
        &mut self,
        openings: &Openings,
        rows: &Range<u64>,
        next: usize,
        raised_in: impl Fn(usize) -> u32,
    ) {
        let reached = buckets_of(0, rows);
        for j in reached.start..reached.end.min(openings.buckets()) {
            let (old, new) = (self.raised[j], raised_in(j) as u8);
            if old == new {
                continue;
            }
            if old == 0 {
                self.touched.push(j);
            }
            self.raised[j] = new;
            for b in j.saturating_sub(MAX_REACH)..=j {
                if b + usize::from(openings.reach[b]) < j {
                    continue;
                }
                self.sum[b] = self.sum[b] + u16::from(new) - u16::from(old);
                let (was, now) = (usize::from(self.open[b]), open_classes(u32::from(self.sum[b])));
                for c in was..now {
                    let l = b * CLASSES + c;
                    if let Some(at) = openings.first_from(l, next) {
                        self.openings[l] += 1;
                        let head = Head {
                            pos: openings.positions[at],
                            at: at as u32,
                            list: l as u32,
                            opening: self.openings[l],
                        };
                        self.heads.push(Reverse(head));
                    }
                }
                // Lists that shut keep their places in the heap until met, then are dropped.
                self.open[b] = now as u8;
            }
        }
    }

    /// Drops the places of lists shut since they were opened, so the least one is live.
    fn settle(&mut self) {
        while let Some(&Reverse(h)) = self.heads.peek() {
            if self.is_open(h.list) && h.opening == self.openings[h.list as usize] {
                return;
            }
            self.heads.pop();
        }
    }

    /// The position of the next listed loser in an open list.
    pub(super) fn peek(&mut self) -> u32 {
        self.settle();
        self.heads.peek().map_or(u32::MAX, |h| h.0.pos)
    }

    /// The record of the next listed loser in an open list, the one [`Live::peek`] gave, moving
    /// past it.
    pub(super) fn take<'a>(&mut self, openings: &'a Openings) -> &'a Visit {
        let mut top = self.heads.peek_mut().expect("a loser was peeked");
        let head = &mut top.0;
        let visit = &openings.visits[head.at as usize];
        head.at += 1;
        if head.at < openings.at[head.list as usize + 1] {
            head.pos = openings.positions[head.at as usize];
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        visit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_blocking_rows_over_every_start() {
        // Rows 1 and 5 blocked in a span of 8: a run of 3 from row 2 meets none, so a loser
        // could not have these bits.
        assert_eq!(fewest_blocking(0b0010_0010, 8, 3), Some(0));
        assert_eq!(fewest_blocking(0b0010_0010, 8, 5), Some(1));
        assert_eq!(fewest_blocking(0b1111_1111, 8, 5), Some(5));
        assert_eq!(fewest_blocking(u128::MAX, 128, 128), Some(128));
        assert_eq!(fewest_blocking(1, 4, 5), None, "no run fits the span");
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(5), 3);
        assert_eq!(class_of(128), CLASSES - 1);
        assert_eq!(open_classes(0), 0);
        assert_eq!(open_classes(5), 4);
    }

    #[test]
    fn a_list_opens_once_its_buckets_hold_enough_raised_rows() {
        // Losers at positions 3, 5 and 9 spanning buckets 1..=2, needing 1, 5 and 20 raised rows.
        let losers = [
            (Visit::loser(3, 70..130, 4), 1),
            (Visit::loser(5, 64..100, 10), 5),
            (Visit::loser(9, 100..140, 30), 20),
        ];
        let openings = Openings::new(4, &losers);
        let mut live = Live::default();
        live.reset(&openings);
        let seen = |live: &mut Live| {
            let mut out = Vec::new();
            while live.peek() != u32::MAX {
                out.push(live.take(&openings).pos);
            }
            out
        };
        // Four raised rows in bucket 2 open the lists of k 1 and k 2..=3 and k 4..=5 in bucket 1
        // (whose losers reach bucket 2), not the one needing 20.
        live.update(&openings, &(128..129), 0, |j| if j == 2 { 4 } else { 0 });
        assert_eq!(seen(&mut live), [3, 5]);
        // Twenty in all, from position 4 on: the loser at 3 is passed, the others met.
        live.reset(&openings);
        live.update(&openings, &(64..192), 4, |j| [0, 16, 4, 0][j]);
        assert_eq!(seen(&mut live), [5, 9]);
        // Lowered again, the lists shut.
        live.reset(&openings);
        live.update(&openings, &(64..192), 0, |j| [0, 16, 4, 0][j]);
        live.update(&openings, &(64..192), 0, |_| 0);
        assert_eq!(seen(&mut live), Vec::<u32>::new());
        // A bucket its losers do not reach opens nothing.
        live.reset(&openings);
        live.update(&openings, &(192..256), 0, |_| 64);
        assert_eq!(seen(&mut live), Vec::<u32>::new());
    }
}
