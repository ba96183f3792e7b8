//! Which bids reach which rows: the records a counterfactual replay visits, found by the buckets
//! of slots their spans reach, in clearing order.
//!
//! Two layouts, chosen by the book's shape. A *dense* book (every bucket holds a good share of
//! all bids, as when many bids crowd a short horizon) keeps a bitset over positions per bucket:
//! a scan ORs the covered buckets' words and pops bits, without a branch per bid. A *sparse* one
//! (a long horizon, each bucket holding a sliver of the book) keeps per bucket the records of
//! its bids in clearing order, and a scan merges the covered buckets' lists: it costs the bids of
//! those buckets, where a bitset would cost a word per 64 positions of the whole book (a winner
//! early in a long book passing over every word to the end, each bucket's bitset as long as the
//! book), and reads records one after another instead of jumping about the book.

use std::ops::Range;

use super::Placement;
#[cfg(test)]
use super::openings::UNIT;
use super::openings::{Live, Openings, fewest_blocking};

/// Slots per bucket.
pub(super) const BUCKET: u64 = 64;

/// The buckets `rows` reach, counted from row `lo`.
pub(super) fn buckets_of(lo: u64, rows: &Range<u64>) -> Range<usize> {
    ((rows.start - lo) / BUCKET) as usize..((rows.end - 1 - lo) / BUCKET) as usize + 1
}

/// What a replay needs of a bid to decide whether its placement may change. Slots are relative
/// to the index's first row.
#[derive(Clone, Copy, Debug)]
pub(super) struct Visit {
    /// The slots of its span that blocked it in the real run, when `tracked`, low word first
    /// (two words rather than a `u128`, whose alignment would pad the record to 48 bytes).
    blocked: [u64; 2],
    pub(super) pos: u32,
    first: u32,
    end: u32,
    duration: u32,
    /// Its real start, `u32::MAX` for a loser.
    start: u32,
    pub(super) mask: u16,
    tracked: bool,
}

impl Visit {
    pub(super) fn span(&self, lo: u64) -> Range<u64> {
        lo + u64::from(self.first)..lo + u64::from(self.end)
    }

    pub(super) fn duration(&self) -> u64 {
        u64::from(self.duration)
    }

    pub(super) fn real_start(&self, lo: u64) -> Option<u64> {
        (self.start != u32::MAX).then(|| lo + u64::from(self.start))
    }

    pub(super) fn blocked(&self) -> Option<u128> {
        self.tracked.then(|| u128::from(self.blocked[0]) | u128::from(self.blocked[1]) << 64)
    }

    /// Its span, relative to the index's first row.
    pub(super) fn rows(&self) -> Range<u64> {
        u64::from(self.first)..u64::from(self.end)
    }

    /// A loser at `pos` over `rows` (relative to the index's first row), blocked everywhere.
    #[cfg(test)]
    pub(super) fn loser(pos: u32, rows: Range<u64>, duration: u32) -> Visit {
        let (first, end) = (rows.start as u32, rows.end as u32);
        Visit { blocked: [u64::MAX; 2], pos, first, end, duration, start: u32::MAX, mask: 1, tracked: true }
    }

    /// For a loser whose blocked rows are tracked, the fewest of them any of its starts met.
    fn fewest_blocking(&self) -> Option<u32> {
        if self.start != u32::MAX {
            return None;
        }
        let width = u64::from(self.end - self.first);
        self.blocked().and_then(|b| fewest_blocking(b, width, self.duration()))
    }
}

/// For each bucket of [`BUCKET`] slots, the bids whose span reaches into it, in one of the two
/// layouts of the module's header; losers whose blocking rows are known, apart, by what could
/// open them ([`super::openings`]).
#[derive(Debug)]
pub(super) struct SpanIndex {
    pub(super) lo: u64,
    buckets: usize,
    /// Winners, and losers listed by their span alone.
    lists: Lists,
    openings: Openings,
}

#[derive(Debug)]
enum Lists {
    /// Every bid's record by position, and per bucket a bitset over positions of `words` words.
    Dense { visits: Vec<Visit>, words: usize, bits: Vec<u64> },
    /// Bucket `b`'s records are `visits[at[b]..at[b + 1]]`, with their positions packed in
    /// `positions` (a merge passing over several buckets' bids reads four bytes a bid).
    Sparse { at: Vec<usize>, visits: Vec<Visit>, positions: Vec<u32> },
}

impl SpanIndex {
    pub(super) fn new(p: &Placement, lo: u64) -> SpanIndex {
        SpanIndex::laid_out(p, lo, None)
    }

    /// The index in the layout `dense` asks for, or, given `None`, the one the book's shape
    /// calls for.
    fn laid_out(p: &Placement, lo: u64, dense: Option<bool>) -> SpanIndex {
        let rel = |slot: u64| u32::try_from(slot - lo).expect("the grid's rows fit in u32");
        let visits: Vec<Visit> = (p.ranked.iter().enumerate())
            .map(|(pos, r)| {
                let span = r.span();
                let blocked = p.blocked[pos].unwrap_or(0);
                Visit {
                    blocked: [blocked as u64, (blocked >> 64) as u64],
                    pos: pos as u32,
                    first: rel(span.start),
                    end: rel(span.end),
                    duration: u32::try_from(r.duration).expect("runs fit in u32"),
                    start: p.starts[pos].map_or(u32::MAX, rel),
                    mask: r.mask,
                    tracked: p.blocked[pos].is_some(),
                }
            })
            .collect();
        let reached = |v: &Visit| buckets_of(0, &v.rows());
        let buckets = visits.iter().map(|v| reached(v).end).max().unwrap_or(0);
        // Losers that need a known number of raised rows wait in the openings; every other bid
        // is visited wherever the replay's rows reach it.
        let (mut losers, mut listed) = (Vec::new(), vec![false; visits.len()]);
        for v in &visits {
            match v.fewest_blocking() {
                Some(k) if k > 0 => losers.push((*v, k)),
                _ => listed[v.pos as usize] = true,
            }
        }
        let openings = Openings::new(&losers);
        let mut at = vec![0usize; buckets + 1];
        for v in visits.iter().filter(|v| listed[v.pos as usize]) {
            for b in reached(v) {
                at[b + 1] += 1;
            }
        }
        let words = visits.len().div_ceil(64);
        let entries: usize = at.iter().sum();
        // Bitsets when they take no more words than the lists take records twice over.
        if dense.unwrap_or(buckets * words <= 2 * entries) {
            let mut bits = vec![0u64; buckets * words];
            for (pos, v) in visits.iter().enumerate().filter(|&(pos, _)| listed[pos]) {
                for b in reached(v) {
                    bits[b * words + pos / 64] |= 1 << (pos % 64);
                }
            }
            return SpanIndex { lo, buckets, lists: Lists::Dense { visits, words, bits }, openings };
        }
        for b in 0..buckets {
            at[b + 1] += at[b];
        }
        let mut fill = at[..buckets].to_vec();
        let mut records = visits.first().map_or_else(Vec::new, |&any| vec![any; at[buckets]]);
        for v in visits.iter().filter(|v| listed[v.pos as usize]) {
            for b in reached(v) {
                records[fill[b]] = *v;
                fill[b] += 1;
            }
        }
        let positions = records.iter().map(|v| v.pos).collect();
        SpanIndex { lo, buckets, lists: Lists::Sparse { at, visits: records, positions }, openings }
    }

    fn bucket_range(&self, rows: &Range<u64>) -> Range<usize> {
        let reached = buckets_of(self.lo, rows);
        reached.start.min(self.buckets)..reached.end.min(self.buckets)
    }

    /// The bids after position `after` that a replay holding `rows`, and raising none of them
    /// yet, must visit, in order; `live` is the scan's scratch.
    pub(super) fn scan<'a>(&'a self, after: usize, rows: Range<u64>, live: &'a mut Live) -> Scan<'a> {
        live.reset(&self.openings);
        let mut scan = Scan {
            index: self,
            covered: 0..0,
            next: after + 1,
            at: 0,
            word: 0,
            heads: Vec::new(),
            ahead: None,
            live,
        };
        scan.widen(rows);
        scan
    }
}

/// The bids a replay visits, in clearing order and each once: those of the covered buckets
/// listed by span, over a growing range of rows, merged with the losers of the open classes.
#[derive(Debug)]
pub(super) struct Scan<'a> {
    index: &'a SpanIndex,
    covered: Range<usize>,
    /// The position after the last bid yielded.
    next: usize,
    /// Dense: the covered buckets' bits of word `at`, from where the listed stream stands on.
    at: usize,
    word: u64,
    /// Sparse: per covered bucket, where it is in its list.
    heads: Vec<Head>,
    /// The listed stream's next bid, once fetched (`Some(None)` when it is done).
    ahead: Option<Option<&'a Visit>>,
    live: &'a mut Live,
}

/// A covered bucket's place in its list: the next record, the list's end, and the record's
/// position (`u32::MAX` once the list is done).
#[derive(Clone, Copy, Debug)]
struct Head {
    at: usize,
    end: usize,
    pos: u32,
}

impl<'a> Scan<'a> {
    /// Covers the buckets of `rows` too, from the current position on.
    pub(super) fn widen(&mut self, rows: Range<u64>) {
        let want = self.index.bucket_range(&rows);
        let covered = if self.covered.is_empty() {
            want
        } else {
            want.start.min(self.covered.start)..want.end.max(self.covered.end)
        };
        if covered == self.covered {
            return;
        }
        self.covered = covered;
        self.ahead = None;
        let next = self.next;
        match &self.index.lists {
            Lists::Dense { .. } => {
                self.at = next / 64;
                self.word = self.load(self.at) & (u64::MAX << (next % 64));
            }
            Lists::Sparse { at, positions, .. } => {
                self.heads.clear();
                self.heads.extend(self.covered.clone().map(|b| {
                    let (from, end) = (at[b], at[b + 1]);
                    let at = from + positions[from..end].partition_point(|&pos| (pos as usize) < next);
                    Head { at, end, pos: if at < end { positions[at] } else { u32::MAX } }
                }));
            }
        }
    }

    /// Notes that the replay's raised cells changed in `rows`: `raised_in(unit)` counts the rows
    /// of a unit with a raised cell now. Losers of classes that open are met from here on.
    pub(super) fn raised(&mut self, rows: &Range<u64>, raised_in: impl Fn(usize) -> u32) {
        let lo = self.index.lo;
        let rel = rows.start - lo..rows.end - lo;
        self.live.update(&self.index.openings, &rel, self.next, raised_in);
    }

    /// Dense: the covered buckets' bits of word `w`.
    fn load(&self, w: usize) -> u64 {
        let Lists::Dense { words, bits, .. } = &self.index.lists else { return 0 };
        if w >= *words {
            return 0;
        }
        self.covered.clone().fold(0, |acc, b| acc | bits[b * words + w])
    }

    /// The listed stream's next bid, moving past it.
    fn fetch(&mut self) -> Option<&'a Visit> {
        match &self.index.lists {
            Lists::Dense { visits, words, .. } => {
                while self.word == 0 {
                    self.at += 1;
                    if self.at >= *words {
                        return None;
                    }
                    self.word = self.load(self.at);
                }
                let pos = self.at * 64 + self.word.trailing_zeros() as usize;
                self.word &= self.word - 1;
                Some(&visits[pos])
            }
            Lists::Sparse { visits, positions, .. } => {
                let least = self.heads.iter().map(|h| h.pos).min().unwrap_or(u32::MAX);
                if least == u32::MAX {
                    return None;
                }
                let mut found = 0;
                for head in &mut self.heads {
                    if head.pos == least {
                        found = head.at;
                        head.at += 1;
                        head.pos = if head.at < head.end { positions[head.at] } else { u32::MAX };
                    }
                }
                Some(&visits[found])
            }
        }
    }
}

impl<'a> Iterator for Scan<'a> {
    type Item = &'a Visit;

    fn next(&mut self) -> Option<&'a Visit> {
        let listed = match self.ahead {
            Some(v) => v,
            None => {
                let v = self.fetch();
                self.ahead = Some(v);
                v
            }
        };
        let listed_pos = listed.map_or(u32::MAX, |v| v.pos);
        let loser = self.live.peek();
        let visit = if listed_pos <= loser {
            self.ahead = None;
            listed?
        } else {
            self.live.take(&self.index.openings)
        };
        self.next = visit.pos as usize + 1;
        Some(visit)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Ranked, Rows};
    use super::*;

    /// A placement of `n` bids with spans spread over `slots` rows from row 1000, every third
    /// a winner.
    fn placement(n: usize, slots: u64) -> Placement {
        let mut seed = 7u64;
        let mut draw = |below: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        let ranked: Vec<Ranked> = (0..n)
            .map(|i| {
                let first = 1000 + draw(slots - 200);
                let (duration, width) = (1 + draw(40), 40 + draw(160));
                Ranked {
                    key: -(i as f64),
                    order: i as u64,
                    size: 1,
                    first,
                    last_end: first + width,
                    duration,
                    limit: 1,
                    reserve: 0,
                    mask: 1 << draw(4),
                }
            })
            .collect();
        let starts = ranked.iter().enumerate().map(|(i, r)| (i % 3 == 0).then_some(r.first)).collect();
        let blocked = (0..n).map(|i| Some(i as u128 * 0x9e37_79b9_7f4a_7c15)).collect();
        Placement { ranked, starts, blocked, rows: Rows::default() }
    }

    /// What a scan yields, by position and record, widened to `more` after `widen_at` visits,
    /// when it also raises every row of the buckets of `raised` once it has visited `raise_at`.
    fn scanned(
        index: &SpanIndex,
        (after, rows): (usize, Range<u64>),
        (widen_at, more): (usize, Range<u64>),
        (raise_at, raised): (usize, Range<u64>),
    ) -> Vec<(u32, u128, u64)> {
        let mut live = Live::default();
        let mut scan = index.scan(after, rows, &mut live);
        let mut out = Vec::new();
        if raise_at == 0 {
            scan.raised(&raised, |_| UNIT as u32);
        }
        while let Some(v) = scan.next() {
            out.push((v.pos, v.blocked().unwrap(), v.span(index.lo).start));
            if out.len() == widen_at {
                scan.widen(more.clone());
            }
            if out.len() == raise_at {
                scan.raised(&raised, |_| UNIT as u32);
            }
        }
        out
    }

    /// Whether the bid at `i` waits in the openings: a loser some start of which met a blocked
    /// row.
    fn waits(p: &Placement, i: usize) -> bool {
        let r = &p.ranked[i];
        p.starts[i].is_none()
            && fewest_blocking(p.blocked[i].unwrap(), r.last_end - r.first, r.duration).is_some_and(|k| k > 0)
    }

    #[test]
    fn both_layouts_visit_the_same_bids_in_order() {
        for (n, slots) in [(300, 400), (300, 60_000), (1, 300)] {
            let p = placement(n, slots);
            let (dense, sparse) =
                (SpanIndex::laid_out(&p, 1000, Some(true)), SpanIndex::laid_out(&p, 1000, Some(false)));
            assert!(
                matches!(dense.lists, Lists::Dense { .. }) && matches!(sparse.lists, Lists::Sparse { .. })
            );
            let chosen = SpanIndex::new(&p, 1000);
            assert_eq!(
                matches!(chosen.lists, Lists::Dense { .. }),
                slots < 10_000,
                "{n} bids over {slots} slots"
            );
            for (after, rows, widen_at, more) in [
                (0, 1100..1150, 3, 1000..1400),
                (10, 1200..1201, 1, 1250..1300),
                (n / 2, 1000..1000 + slots, 0, 1000..1001),
                (n - 1, 1000..1000 + slots, 0, 1000..1001),
            ] {
                let want: Vec<_> = (after + 1..n)
                    .filter(|&i| !waits(&p, i))
                    .filter(|&i| {
                        let r = &p.ranked[i];
                        let reaches = |rows: &Range<u64>| {
                            let bucket = |row: u64| (row - 1000) / BUCKET;
                            bucket(r.first) <= bucket(rows.end - 1)
                                && bucket(r.last_end - 1) >= bucket(rows.start)
                        };
                        reaches(&rows) || (widen_at > 0 && reaches(&more))
                    })
                    .collect();
                let no_raise = (usize::MAX, 0..1);
                let d = scanned(&dense, (after, rows.clone()), (widen_at, more.clone()), no_raise.clone());
                assert_eq!(d, scanned(&sparse, (after, rows.clone()), (widen_at, more.clone()), no_raise));
                assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "in clearing order, each once");
                for &(pos, blocked, first) in &d {
                    let i = pos as usize;
                    assert!(want.contains(&i), "{i} does not reach the rows");
                    assert_eq!((blocked, first), (p.blocked[i].unwrap(), p.ranked[i].first));
                }
                if widen_at == 0 {
                    assert_eq!(d.iter().map(|v| v.0 as usize).collect::<Vec<_>>(), want);
                }
            }
        }
    }

    #[test]
    fn raised_rows_bring_the_losers_that_wait_for_them_into_the_scan() {
        let p = placement(600, 400);
        let index = SpanIndex::new(&p, 1000);
        let waiting = (0..600).filter(|&i| waits(&p, i)).count();
        assert!(waiting > 100, "{waiting} losers wait");
        // Every row raised from the start: every bid reaching the rows, in order.
        let (rows, raised) = (1000..1400, 1000..1400);
        let all = scanned(&index, (0, rows.clone()), (usize::MAX, 0..1), (0, raised.clone()));
        let everyone: Vec<u32> =
            (1..600).filter(|&i| p.ranked[i].last_end > 1000).map(|i| i as u32).collect();
        assert_eq!(all.iter().map(|v| v.0).collect::<Vec<_>>(), everyone);
        // Raised after 20 visits: the waiting losers only from there on, each once, in order.
        let late = scanned(&index, (0, rows.clone()), (usize::MAX, 0..1), (20, raised));
        assert!(late.windows(2).all(|w| w[0].0 < w[1].0), "in clearing order, each once");
        let from = late[19].0;
        let visited =
            |keep: &dyn Fn(u32) -> bool| late.iter().map(|v| v.0).filter(|&i| keep(i)).collect::<Vec<_>>();
        let listed_before: Vec<u32> =
            everyone.iter().copied().filter(|&i| i <= from && !waits(&p, i as usize)).collect();
        assert_eq!(visited(&|i| i <= from), listed_before);
        assert_eq!(
            visited(&|i| i > from),
            everyone.iter().copied().filter(|&i| i > from).collect::<Vec<_>>()
        );
        // Raised rows in bucket 3 open only the lists of losers first reaching buckets 1 to 3.
        let far = scanned(&index, (0, 1000..1064), (usize::MAX, 0..1), (0, 1192..1256));
        let bucket = |row: u64| (row - 1000) / BUCKET;
        assert!(far.iter().any(|v| waits(&p, v.0 as usize)));
        for v in &far {
            let r = &p.ranked[v.0 as usize];
            if waits(&p, v.0 as usize) {
                assert!(
                    (1..=3).contains(&bucket(r.first)),
                    "{} first reaches bucket {}",
                    v.0,
                    bucket(r.first)
                );
            } else {
                assert_eq!(bucket(r.first), 0, "listed bids reach the scanned rows");
            }
        }
    }
}
