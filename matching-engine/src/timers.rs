//! Every deadline of the engine in one binary heap: an order's expiry (GTT, or an ask that
//! can no longer fit a one-hour lease), a node's heartbeat timeout, a metered lease's
//! next wake-up (its acknowledgement deadline, its next charge-period accrual or its term,
//! whichever comes first), the release of withdrawn bond, and the end of a payment's hold. Pushing and popping cost O(log n) (amortized: a deadline beyond
//! the next hour waits in a plain list until the clock comes within the hour); a clock
//! command with nothing due only looks at the top.
//!
//! Entries are never removed when what they point at changes: each holds the time it was
//! set for, and is acted on only if its subject still has that deadline (lazy
//! invalidation). The heap is not part of the state: a restore sets one entry per subject
//! from the state, and since entries pop in the total order of (time, kind, id), the
//! restored engine meets the same deadlines in the same order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// What a deadline belongs to; at one instant, orders come first, then nodes, then leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// `id` is an order id; `slot` is where it rests, so checking the entry costs no lookup
    /// (the slot may hold another order by then: the id tells).
    Order { slot: u32 },
    /// `id` is the node's index in the engine's node list.
    Node,
    /// `id` is a lease id.
    Lease,
    /// `id` is an unbonding's id.
    Unbond,
    /// `id` is the id of a lease whose payment is held for review.
    Held,
}

impl Due {
    fn rank(self) -> u8 {
        match self {
            Due::Order { .. } => 0,
            Due::Node => 1,
            Due::Lease => 2,
            Due::Unbond => 3,
            Due::Held => 4,
        }
    }
}

/// Entries order by `(at, kind, id)`; an order's slot is not part of the order, since slots
/// differ after a restore and ids do not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    pub at: i64,
    pub due: Due,
    pub id: u64,
}

impl Timer {
    fn key(&self) -> (i64, u8, u64) {
        (self.at, self.due.rank(), self.id)
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The heap holds the entries due within the horizon; later ones wait unsorted in `far`
/// and move into the heap when the clock reaches the horizon, once per horizon of engine
/// time. Most deadlines are far (an ask offered for a week, a GTT order for a day) and most
/// of those are moot before they come (the order filled or was cancelled): they cost a
/// push onto a vector, never a place in the heap.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    far: Vec<Timer>,
    /// Everything due by this time is in the heap.
    horizon: i64,
}

impl Timers {
    /// How far ahead the heap reaches.
    const HORIZON_MS: i64 = contract::Timestamp::MS_PER_HOUR;

    pub fn push(&mut self, at: i64, due: Due, id: u64) {
        let timer = Timer { at, due, id };
        if at > self.horizon {
            self.far.push(timer);
        } else {
            self.heap.push(Reverse(timer));
        }
    }

    /// The earliest entry, if it is due at `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<Timer> {
        if now > self.horizon {
            self.horizon = now.saturating_add(Self::HORIZON_MS);
            let (heap, horizon) = (&mut self.heap, self.horizon);
            self.far.retain(|t| {
                let near = t.at <= horizon;
                if near {
                    heap.push(Reverse(*t));
                }
                !near
            });
        }
        match self.heap.peek() {
            Some(Reverse(timer)) if timer.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len() + self.far.len()
    }

    /// Drops the entries `live` says no longer apply.
    pub fn retain(&mut self, mut live: impl FnMut(&Timer) -> bool) {
        self.far.retain(&mut live);
        self.heap.retain(|Reverse(timer)| live(timer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pop_by_kind_then_id_and_only_when_due() {
        let mut timers = Timers::default();
        for (at, due, id) in [
            (5, Due::Lease, 2),
            (5, Due::Order { slot: 0 }, 9),
            (3, Due::Lease, 7),
            (5, Due::Lease, 1),
            (5, Due::Node, 4),
            (Timers::HORIZON_MS + 9, Due::Lease, 3),
        ] {
            timers.push(at, due, id);
        }
        assert_eq!(timers.pop_due(2), None);
        let popped: Vec<(i64, Due, u64)> = std::iter::from_fn(|| timers.pop_due(5))
            .map(|t| (t.at, t.due, t.id))
            .collect();
        assert_eq!(
            popped,
            [
                (3, Due::Lease, 7),
                (5, Due::Order { slot: 0 }, 9),
                (5, Due::Node, 4),
                (5, Due::Lease, 1),
                (5, Due::Lease, 2)
            ]
        );
        assert_eq!(timers.len(), 1, "the far entry waits beyond the horizon");
        assert_eq!(timers.pop_due(Timers::HORIZON_MS + 8), None);
        assert_eq!(
            timers.pop_due(Timers::HORIZON_MS + 9).map(|t| t.id),
            Some(3)
        );
        assert_eq!(timers.len(), 0);
    }
}
