//! Lookup structures sized for the hot path: they stay small and cache-resident however many
//! orders the engine has ever seen.

use std::collections::{BTreeMap, VecDeque};

use contract::{ClientOrderId, OrderId};
use serde::{Deserialize, Serialize};

use crate::book::NIL;

/// The client order ids one account has used, as runs of consecutive ids.
///
/// Bots usually number their orders, so an account's whole history is one run, kept out of
/// the tree: the usual check and insert (a counter's next value) compare two numbers and
/// touch no tree node. Random ids (UUIDs) still work, one run each. Snapshots write every run
/// in one map, as before the last run moved out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ClientIdRuns", into = "ClientIdRuns")]
pub(crate) struct ClientIds {
    /// Run start → run end (inclusive), for every run but the last.
    older: BTreeMap<u128, u128>,
    /// The run that starts highest; `None` only when there is no run at all.
    last: Option<(u128, u128)>,
}

/// [`ClientIds`] as snapshots write it.
#[derive(Serialize, Deserialize)]
struct ClientIdRuns {
    runs: BTreeMap<u128, u128>,
}

impl From<ClientIdRuns> for ClientIds {
    fn from(ClientIdRuns { mut runs }: ClientIdRuns) -> Self {
        let last = runs.pop_last();
        ClientIds { older: runs, last }
    }
}

impl From<ClientIds> for ClientIdRuns {
    fn from(ClientIds { mut older, last }: ClientIds) -> Self {
        older.extend(last);
        ClientIdRuns { runs: older }
    }
}

impl ClientIds {
    pub fn contains(&self, id: ClientOrderId) -> bool {
        let id = id.0;
        match self.last {
            None => false,
            Some((_, end)) if id > end => false,
            Some((start, _)) if id >= start => true,
            Some(_) => self
                .older
                .range(..=id)
                .next_back()
                .is_some_and(|(_, &end)| id <= end),
        }
    }

    /// Records `id`, which must not be recorded yet.
    pub fn insert(&mut self, id: ClientOrderId) {
        let id = id.0;
        // The usual case: a counter's next value extends the last run.
        if let Some((_, end)) = &mut self.last {
            if end.checked_add(1) == Some(id) {
                *end = id;
                return;
            }
        }
        self.insert_elsewhere(id);
    }

    /// Any other id: merged with its neighbours in the tree. Out of line, so the usual case
    /// above pays for none of this one's stack frame.
    #[cold]
    fn insert_elsewhere(&mut self, id: u128) {
        let mut runs = std::mem::take(&mut self.older);
        runs.extend(self.last.take());
        let before = runs
            .range(..id)
            .next_back()
            .filter(|(_, &end)| end.checked_add(1) == Some(id))
            .map(|(&start, _)| start);
        let after = id
            .checked_add(1)
            .and_then(|next| runs.get(&next).map(|&end| (next, end)));
        match (before, after) {
            (Some(start), Some((next, end))) => {
                runs.remove(&next);
                runs.insert(start, end);
            }
            (Some(start), None) => {
                runs.insert(start, id);
            }
            (None, Some((next, end))) => {
                runs.remove(&next);
                runs.insert(id, end);
            }
            (None, None) => {
                runs.insert(id, id);
            }
        }
        self.last = runs.pop_last();
        self.older = runs;
    }
}

const PAGE_BITS: u32 = 10;
const PAGE: usize = 1 << PAGE_BITS;

#[derive(Debug, Clone)]
struct Page {
    slots: Box<[u32; PAGE]>,
    live: u32,
}

/// Order id → slab slot. Order ids are dense and increasing, so the index is a deque of
/// pages of 1,024 slots, from the page of the oldest resting order on: a lookup is a
/// subtraction and two array reads, with no hashing (a hash map of pages cost a third of a
/// cancel). A page is freed when its last order leaves and freed pages at either end are
/// dropped, so memory follows the live orders plus 16 bytes per 1,024 ids between the oldest
/// resting order and the newest (16 MB for a billion).
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderIndex {
    /// The page number of `pages[0]`.
    first: u64,
    pages: VecDeque<Option<Page>>,
}

impl OrderIndex {
    fn split(id: OrderId) -> (u64, usize) {
        (id.0 >> PAGE_BITS, (id.0 as usize) & (PAGE - 1))
    }

    fn page(&self, page: u64) -> Option<usize> {
        usize::try_from(page.checked_sub(self.first)?).ok()
    }

    pub fn get(&self, id: OrderId) -> Option<u32> {
        let (page, at) = Self::split(id);
        let slot = self.pages.get(self.page(page)?)?.as_ref()?.slots[at];
        (slot != NIL).then_some(slot)
    }

    pub fn insert(&mut self, id: OrderId, slot: u32) {
        let (page, at) = Self::split(id);
        // The usual case: the id's page exists (a new page is one insert in 1,024).
        if let Some(Some(page)) = self.page(page).and_then(|index| self.pages.get_mut(index)) {
            if page.slots[at] == NIL {
                page.live += 1;
            }
            page.slots[at] = slot;
            return;
        }
        self.insert_with_page(page, at, slot);
    }

    #[cold]
    fn insert_with_page(&mut self, page: u64, at: usize, slot: u32) {
        if self.pages.is_empty() {
            self.first = page;
        }
        // A restore inserts in slot order, so an id may come before the first page.
        while page < self.first {
            self.pages.push_front(None);
            self.first -= 1;
        }
        let index = (page - self.first) as usize;
        while self.pages.len() <= index {
            self.pages.push_back(None);
        }
        let page = self.pages[index].get_or_insert_with(|| Page {
            slots: Box::new([NIL; PAGE]),
            live: 0,
        });
        if page.slots[at] == NIL {
            page.live += 1;
        }
        page.slots[at] = slot;
    }

    pub fn remove(&mut self, id: OrderId) {
        let (page, at) = Self::split(id);
        let Some(index) = self.page(page) else {
            return;
        };
        let Some(Some(page)) = self.pages.get_mut(index) else {
            return;
        };
        if page.slots[at] == NIL {
            return;
        }
        page.slots[at] = NIL;
        page.live -= 1;
        if page.live == 0 {
            self.free_page(index);
        }
    }

    #[cold]
    fn free_page(&mut self, index: usize) {
        self.pages[index] = None;
        while let Some(None) = self.pages.front() {
            self.pages.pop_front();
            self.first += 1;
        }
        while let Some(None) = self.pages.back() {
            self.pages.pop_back();
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
            ClientIdRuns::from(ids.clone())
                .runs
                .into_iter()
                .collect::<Vec<_>>(),
            vec![(1, 7), (100, 100)]
        );
        assert_eq!(
            ids.last,
            Some((100, 100)),
            "the highest run is kept out of the tree"
        );
        assert_eq!(ClientIds::from(ClientIdRuns::from(ids.clone())), ids);
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
        // A restore may insert an older id after a newer one.
        index.insert(OrderId(5), 1);
        assert_eq!(
            (index.get(OrderId(5)), index.get(OrderId(2_000))),
            (Some(1), Some(7))
        );
        index.remove(OrderId(2_000));
        assert_eq!((index.pages.len(), index.get(OrderId(2_000))), (1, None));
        index.remove(OrderId(5));
        assert!(index.pages.is_empty());
        assert_eq!(index.get(OrderId(u64::MAX)), None);
    }
}

/// Running leases by id. Ids are dense and increasing and most leases end in roughly the
/// order they began, so a deque indexed by `id - first` replaces a hash map: inserting is a
/// push, and ended leases at the front are dropped.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    /// The id of the deque's front entry.
    first: u64,
    running: VecDeque<Option<crate::Lease>>,
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
        let mut running = VecDeque::new();
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
