//! Lookup structures sized for the hot path: they stay small and cache-resident however many
//! orders the engine has ever seen.

use std::collections::BTreeMap;

use contract::{ClientOrderId, OrderId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::book::NIL;

/// The client order ids one account has used, as runs of consecutive ids.
///
/// Bots usually number their orders, so an account's whole history is one run and a check
/// costs one lookup in a one-entry tree; random ids (UUIDs) still work, one run each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientIds {
    /// Run start → run end (inclusive).
    runs: BTreeMap<u128, u128>,
}

impl ClientIds {
    pub fn contains(&self, id: ClientOrderId) -> bool {
        // The usual case, a counter's next value, is above every run.
        if self
            .runs
            .last_key_value()
            .is_none_or(|(_, &end)| id.0 > end)
        {
            return false;
        }
        self.runs
            .range(..=id.0)
            .next_back()
            .is_some_and(|(_, &end)| id.0 <= end)
    }

    /// Records `id`, which must not be recorded yet.
    pub fn insert(&mut self, id: ClientOrderId) {
        let id = id.0;
        // The usual case: a counter's next value extends the last run.
        if let Some(mut last) = self.runs.last_entry() {
            if last.get().checked_add(1) == Some(id) {
                *last.get_mut() = id;
                return;
            }
        }
        let before = self
            .runs
            .range(..id)
            .next_back()
            .filter(|(_, &end)| end.checked_add(1) == Some(id))
            .map(|(&start, _)| start);
        let after = id
            .checked_add(1)
            .and_then(|next| self.runs.get(&next).map(|&end| (next, end)));
        match (before, after) {
            (Some(start), Some((next, end))) => {
                self.runs.remove(&next);
                self.runs.insert(start, end);
            }
            (Some(start), None) => {
                self.runs.insert(start, id);
            }
            (None, Some((next, end))) => {
                self.runs.remove(&next);
                self.runs.insert(id, end);
            }
            (None, None) => {
                self.runs.insert(id, id);
            }
        }
    }
}

const PAGE_BITS: u32 = 10;
const PAGE: usize = 1 << PAGE_BITS;

#[derive(Debug, Clone)]
struct Page {
    slots: Box<[u32; PAGE]>,
    live: u32,
}

/// Order id → slab slot. Order ids are dense and increasing, so the index is a map of pages
/// of 1,024 slots; a page is freed when its last order leaves, so memory follows the live
/// orders and a lookup is one probe in a small map plus an array read.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderIndex {
    pages: FxHashMap<u64, Page>,
}

impl OrderIndex {
    fn split(id: OrderId) -> (u64, usize) {
        (id.0 >> PAGE_BITS, (id.0 as usize) & (PAGE - 1))
    }

    pub fn get(&self, id: OrderId) -> Option<u32> {
        let (page, at) = Self::split(id);
        let slot = self.pages.get(&page)?.slots[at];
        (slot != NIL).then_some(slot)
    }

    pub fn insert(&mut self, id: OrderId, slot: u32) {
        let (page, at) = Self::split(id);
        let page = self.pages.entry(page).or_insert_with(|| Page {
            slots: Box::new([NIL; PAGE]),
            live: 0,
        });
        if page.slots[at] == NIL {
            page.live += 1;
        }
        page.slots[at] = slot;
    }

    pub fn remove(&mut self, id: OrderId) {
        let (key, at) = Self::split(id);
        if let Some(page) = self.pages.get_mut(&key) {
            if page.slots[at] != NIL {
                page.slots[at] = NIL;
                page.live -= 1;
                if page.live == 0 {
                    self.pages.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_merge_runs_in_any_order() {
        let mut ids = ClientIds::default();
        for id in [5, 7, 6, 1, 3, 2, 100, 4] {
            assert!(!ids.contains(ClientOrderId(id)));
            ids.insert(ClientOrderId(id));
            assert!(ids.contains(ClientOrderId(id)));
        }
        assert_eq!(
            ids.runs.iter().map(|(s, e)| (*s, *e)).collect::<Vec<_>>(),
            vec![(1, 7), (100, 100)]
        );
        assert!(!ids.contains(ClientOrderId(0)) && !ids.contains(ClientOrderId(8)));
        ids.insert(ClientOrderId(u128::MAX));
        assert!(ids.contains(ClientOrderId(u128::MAX)));
    }

    #[test]
    fn restored_leases_keep_the_places_of_ended_ones() {
        let lease = |id| crate::Lease {
            id: contract::LeaseId(id),
            market: contract::MarketId::parse("H100-80GB").unwrap(),
            buyer: contract::AccountId(1),
            provider: contract::AccountId(2),
            node: contract::NodeId::parse("n").unwrap(),
            gpus: 1,
            price: contract::Price::from_micros(1),
            start: contract::Timestamp(0),
            hours: 1,
            cost: contract::Amount::from_micros(1),
            started_at: None,
            meter: crate::metering::Meter::unmetered(0),
        };
        // Leases 1 and 3 ran; 2 and 4 ended; the next is 5.
        let mut leases = Leases::restore(vec![lease(1), lease(3)], 5);
        leases.push(lease(5));
        assert_eq!(leases.get(contract::LeaseId(5)).map(|l| l.id.0), Some(5));
        assert!(leases.get(contract::LeaseId(4)).is_none());
        assert_eq!(leases.remove(contract::LeaseId(1)).map(|l| l.id.0), Some(1));
        assert_eq!(leases.get(contract::LeaseId(3)).map(|l| l.id.0), Some(3));
        assert_eq!(leases.iter().count(), 2);
    }

    #[test]
    fn the_order_index_frees_empty_pages() {
        let mut index = OrderIndex::default();
        index.insert(OrderId(3), 30);
        index.insert(OrderId(2_000), 7);
        assert_eq!(index.get(OrderId(3)), Some(30));
        assert_eq!(index.get(OrderId(4)), None);
        index.remove(OrderId(3));
        index.remove(OrderId(3));
        assert_eq!(index.get(OrderId(3)), None);
        assert_eq!(index.pages.len(), 1);
    }
}

/// Running leases by id. Ids are dense and increasing and most leases end in roughly the
/// order they began, so a deque indexed by `id - first` replaces a hash map: inserting is a
/// push, and ended leases at the front are dropped.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    /// The id of the deque's front entry.
    first: u64,
    running: std::collections::VecDeque<Option<crate::Lease>>,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            first: 1,
            running: Default::default(),
        }
    }
}

impl Leases {
    /// Leases restored from a snapshot; `next` is the id the next lease will get.
    pub fn restore(leases: Vec<crate::Lease>, next: u64) -> Self {
        let first = leases.first().map_or(next, |l| l.id.0);
        let mut running = std::collections::VecDeque::new();
        for lease in leases {
            while first + (running.len() as u64) < lease.id.0 {
                running.push_back(None);
            }
            running.push_back(Some(lease));
        }
        // Leases that ended after the last running one still hold their places, so the next
        // lease lands at `next`.
        while first + (running.len() as u64) < next {
            running.push_back(None);
        }
        Leases { first, running }
    }

    /// Adds the lease with the next id.
    pub fn push(&mut self, lease: crate::Lease) {
        debug_assert_eq!(lease.id.0, self.first + self.running.len() as u64);
        if self.running.is_empty() {
            self.first = lease.id.0;
        }
        self.running.push_back(Some(lease));
    }

    pub fn get(&self, id: contract::LeaseId) -> Option<&crate::Lease> {
        let at = id.0.checked_sub(self.first)?;
        self.running.get(usize::try_from(at).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, id: contract::LeaseId) -> Option<&mut crate::Lease> {
        let at = id.0.checked_sub(self.first)?;
        self.running.get_mut(usize::try_from(at).ok()?)?.as_mut()
    }

    pub fn remove(&mut self, id: contract::LeaseId) -> Option<crate::Lease> {
        let at = usize::try_from(id.0.checked_sub(self.first)?).ok()?;
        let lease = self.running.get_mut(at)?.take();
        while let Some(None) = self.running.front() {
            self.running.pop_front();
            self.first += 1;
        }
        lease
    }

    /// Running leases in id order.
    pub fn iter(&self) -> impl Iterator<Item = &crate::Lease> {
        self.running.iter().flatten()
    }
}
