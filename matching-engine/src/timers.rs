//! Every deadline of the engine in one binary heap: an order's expiry (GTT, or an ask that
//! can no longer fit a one-hour lease), a node's heartbeat timeout, and a metered lease's
//! next wake-up (its acknowledgement deadline, its next charge-period accrual or its term,
//! whichever comes first). Pushing and popping cost O(log n); a clock command with nothing
//! due only looks at the top.
//!
//! Entries are never removed when what they point at changes: each holds the time it was
//! set for, and is acted on only if its subject still has that deadline (lazy
//! invalidation). The heap is not part of the state: a restore sets one entry per subject
//! from the state, and since entries pop in the total order of (time, kind, id), the
//! restored engine meets the same deadlines in the same order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a deadline belongs to; at one instant, orders come first, then nodes, then leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// `id` is an order id.
    Order,
    /// `id` is the node's index in the engine's node list.
    Node,
    /// `id` is a lease id.
    Lease,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub at: i64,
    pub due: Due,
    pub id: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    pub fn push(&mut self, at: i64, due: Due, id: u64) {
        self.heap.push(Reverse(Timer { at, due, id }));
    }

    /// The earliest entry, if it is due at `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(timer)) if timer.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries `live` says no longer apply.
    pub fn retain(&mut self, mut live: impl FnMut(&Timer) -> bool) {
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
            (5, Due::Order, 9),
            (3, Due::Lease, 7),
            (5, Due::Lease, 1),
            (5, Due::Node, 4),
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
                (5, Due::Order, 9),
                (5, Due::Node, 4),
                (5, Due::Lease, 1),
                (5, Due::Lease, 2)
            ]
        );
        assert_eq!(timers.len(), 0);
    }
}
