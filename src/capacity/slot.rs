//! Time as whole slots, and the window a bid may run in.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A slot index: time in whole slots of the market's `slot_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot index.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// When a bid may run: `duration` consecutive slots starting at or after `earliest_start` and
/// ending by `latest_end` (exclusive).
///
/// # Examples
///
/// ```
/// use capacity_auction::{Slot, Window};
///
/// let w = Window::new(Slot(10), Slot(20), 4).unwrap();
/// assert_eq!(w.starts(Slot(0)), 10..17);
/// assert_eq!(w.starts(Slot(15)), 15..17);
/// assert!(w.starts(Slot(17)).is_empty());
/// assert!(Window::new(Slot(10), Slot(13), 4).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    earliest_start: Slot,
    latest_end: Slot,
    duration: u32,
}

impl Window {
    /// The window `[earliest_start, latest_end)` for a run of `duration` slots, if it can hold
    /// one (`duration >= 1` and `earliest_start + duration <= latest_end`).
    pub fn new(earliest_start: Slot, latest_end: Slot, duration: u32) -> Option<Window> {
        let fits = duration >= 1
            && earliest_start.0.checked_add(u64::from(duration)).is_some_and(|end| end <= latest_end.0);
        fits.then_some(Window { earliest_start, latest_end, duration })
    }

    /// The first slot the run may start in.
    pub const fn earliest_start(self) -> Slot {
        self.earliest_start
    }

    /// The slot the run must have ended before.
    pub const fn latest_end(self) -> Slot {
        self.latest_end
    }

    /// The run's length in slots.
    pub const fn duration(self) -> u32 {
        self.duration
    }

    /// The starts still possible when the current slot is `now` (empty when the window can no
    /// longer hold the run).
    pub fn starts(self, now: Slot) -> Range<u64> {
        let first = self.earliest_start.0.max(now.0);
        let last = self.latest_end.0 - u64::from(self.duration);
        first..(last + 1).max(first)
    }

    /// The slots a run may touch when the current slot is `now`.
    pub fn span(self, now: Slot) -> Range<u64> {
        let starts = self.starts(now);
        if starts.is_empty() {
            return starts;
        }
        starts.start..self.latest_end.0
    }
}
