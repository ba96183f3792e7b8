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
}

/// For each bucket of [`BUCKET`] slots, the bids whose span reaches into it, in one of the two
/// layouts of the module's header.
#[derive(Debug)]
pub(super) struct SpanIndex {
    pub(super) lo: u64,
    buckets: usize,
    lists: Lists,
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
        let reached = |v: &Visit| buckets_of(0, &(u64::from(v.first)..u64::from(v.end)));
        let buckets = visits.iter().map(|v| reached(v).end).max().unwrap_or(0);
        let mut at = vec![0usize; buckets + 1];
        for v in &visits {
            for b in reached(v) {
                at[b + 1] += 1;
            }
        }
        let words = visits.len().div_ceil(64);
        let listed: usize = at.iter().sum();
        // Bitsets when they take no more words than the lists take records twice over.
        if dense.unwrap_or(buckets * words <= 2 * listed) {
            let mut bits = vec![0u64; buckets * words];
            for (pos, v) in visits.iter().enumerate() {
                for b in reached(v) {
                    bits[b * words + pos / 64] |= 1 << (pos % 64);
                }
            }
            return SpanIndex { lo, buckets, lists: Lists::Dense { visits, words, bits } };
        }
        for b in 0..buckets {
            at[b + 1] += at[b];
        }
        let mut fill = at[..buckets].to_vec();
        let Some(&any) = visits.first() else {
            return SpanIndex { lo, buckets, lists: Lists::Sparse { at, visits, positions: Vec::new() } };
        };
        let mut listed = vec![any; at[buckets]];
        for v in &visits {
            for b in reached(v) {
                listed[fill[b]] = *v;
                fill[b] += 1;
            }
        }
        let positions = listed.iter().map(|v| v.pos).collect();
        SpanIndex { lo, buckets, lists: Lists::Sparse { at, visits: listed, positions } }
    }

    fn bucket_range(&self, rows: &Range<u64>) -> Range<usize> {
        let reached = buckets_of(self.lo, rows);
        reached.start.min(self.buckets)..reached.end.min(self.buckets)
    }

    /// The bids after position `after` reaching `rows`, in order.
    pub(super) fn scan(&self, after: usize, rows: Range<u64>) -> Scan<'_> {
        let mut scan =
            Scan { index: self, covered: 0..0, next: after + 1, at: 0, word: 0, heads: Vec::new() };
        scan.widen(rows);
        scan
    }
}

/// The bids of the covered buckets, in clearing order and each once, over a growing range of
/// rows.
#[derive(Debug)]
pub(super) struct Scan<'a> {
    index: &'a SpanIndex,
    covered: Range<usize>,
    /// The next position to look at.
    next: usize,
    /// Dense: the covered buckets' bits of word `at`, from `next` on.
    at: usize,
    word: u64,
    /// Sparse: per covered bucket, where it is in its list.
    heads: Vec<Head>,
}

/// A covered bucket's place in its list: the next record, the list's end, and the record's
/// position (`u32::MAX` once the list is done).
#[derive(Clone, Copy, Debug)]
struct Head {
    at: usize,
    end: usize,
    pos: u32,
}

impl Scan<'_> {
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

    /// Dense: the covered buckets' bits of word `w`.
    fn load(&self, w: usize) -> u64 {
        let Lists::Dense { words, bits, .. } = &self.index.lists else { return 0 };
        if w >= *words {
            return 0;
        }
        self.covered.clone().fold(0, |acc, b| acc | bits[b * words + w])
    }
}

impl<'a> Iterator for Scan<'a> {
    type Item = &'a Visit;

    fn next(&mut self) -> Option<&'a Visit> {
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
                self.next = pos + 1;
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
                self.next = least as usize + 1;
                Some(&visits[found])
            }
        }
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

    /// What a scan yields, by position and record, widened to `more` after `widen_at` visits.
    fn scanned(
        index: &SpanIndex,
        after: usize,
        rows: Range<u64>,
        widen_at: usize,
        more: Range<u64>,
    ) -> Vec<(u32, u128, u64)> {
        let mut scan = index.scan(after, rows);
        let mut out = Vec::new();
        while let Some(v) = scan.next() {
            out.push((v.pos, v.blocked().unwrap(), v.span(index.lo).start));
            if out.len() == widen_at {
                scan.widen(more.clone());
            }
        }
        out
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
                let d = scanned(&dense, after, rows.clone(), widen_at, more.clone());
                assert_eq!(d, scanned(&sparse, after, rows.clone(), widen_at, more.clone()));
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
}
