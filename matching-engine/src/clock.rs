//! Time moving forward: every command first brings the engine's clock to its time, and the
//! deadlines passed on the way take effect in their order, each at its own time.

use contract::{CancelReason, Event, LeaseId};

use crate::timers::{Due, Timer};
use crate::Engine;

/// The span of one clock move: from the engine's clock before the command to the command's
/// time. A span longer than a heartbeat timeout means no command at all reached the engine
/// for that long (a clock tick arrives every second), so the market itself was down, and
/// a node cannot be blamed for not reporting during it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub from: i64,
    pub to: i64,
}

impl Span {
    /// Whether the market was down for longer than `timeout` during this move.
    pub fn outage_longer_than(self, timeout: i64) -> bool {
        self.to - self.from > timeout
    }
}

impl Engine {
    pub(crate) fn advance(&mut self, at: i64, out: &mut Vec<Event>) {
        let span = Span {
            from: self.now,
            to: self.now.max(at),
        };
        if !self.pending_ends.is_empty() {
            self.pay_pending(out);
        }
        while let Some(timer) = self.timers.pop_due(span.to) {
            // Each deadline happens at its own time: a re-bid placed when a lease fails
            // meets the book as it was then.
            self.now = self.now.max(timer.at);
            match timer.due {
                Due::Order { slot } => self.order_due(slot, timer, out),
                Due::Node => self.node_due(timer, span, out),
                Due::Lease => self.lease_due(LeaseId(timer.id), timer.at, span, out),
                Due::Unbond => self.unbond_due(timer.id, out),
                Due::Held => self.hold_due(LeaseId(timer.id), timer.at, out),
            }
        }
        self.now = span.to;
    }

    fn order_due(&mut self, slot: u32, timer: Timer, out: &mut Vec<Event>) {
        // Orders that already left the book, or whose expiry changed, left entries behind.
        if self.orders.holds(slot, timer.id, timer.at) {
            self.retire(slot, true, CancelReason::Expired, out);
        }
    }

    /// Sets a deadline. Entries whose subject moved on stay in the heap until they pop;
    /// once they outnumber the subjects that can have one (resting orders, nodes, metered
    /// leases) they are dropped, so the heap stays proportional to those. Counting every
    /// lease instead let a book with many unmetered leases keep a heap of stale entries
    /// many times its size, out of cache (`loadtest engine`'s p99 doubled).
    pub(crate) fn arm(&mut self, at: i64, due: Due, id: u64) {
        self.timers.push(at, due, id);
        let live = self.orders.live_count()
            + self.nodes.metered_leases()
            + self.nodes.len()
            + self.unbondings.len()
            + self.held.len();
        if self.timers.len() > 2 * live + 1_024 {
            self.drop_stale_timers();
        }
    }

    #[cold]
    fn drop_stale_timers(&mut self) {
        let (orders, nodes, leases) = (&self.orders, &self.nodes, &self.leases);
        let (unbondings, held) = (&self.unbondings, &self.held);
        self.timers.retain(|t| match t.due {
            Due::Order { slot } => orders.holds(slot, t.id, t.at),
            Due::Node => nodes.deadline(t.id as u32) == Some(t.at),
            Due::Lease => leases
                .get(LeaseId(t.id))
                .is_some_and(|l| l.meter.deadline == t.at),
            Due::Unbond => unbondings.contains_key(&t.id),
            Due::Held => held.get(&LeaseId(t.id)).is_some_and(|h| h.until == t.at),
        });
    }
}
