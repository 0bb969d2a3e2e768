//! Order storage and price ladders.
//!
//! Orders live in one slab (a `Vec` with a free list) and are linked into FIFO queues per
//! price level by slot index, so adding, removing from the middle and popping the front are
//! O(1) and allocate nothing once the slab has grown. A ladder keeps its levels in a `Vec`
//! sorted worst-to-best, so the best level is the last element: the levels that change most
//! (near the touch) are the cheapest to insert and remove.

use contract::{
    AccountId, BidSpec, ClientOrderId, Interconnect, NodeId, NodeRef, OrderId, Region, Reputation,
    Side, TimeInForce, Vendor,
};
use serde::{Deserialize, Serialize};

pub(crate) const NIL: u32 = u32::MAX;

/// A resting (or arriving) order in the engine's compact form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub client_id: ClientOrderId,
    pub market: u32,
    pub side: Side,
    /// Micro-units per GPU-hour.
    pub price: i64,
    pub remaining: u32,
    pub filled: u32,
    /// Money still held for a bid: always `price × remaining × hours`.
    pub hold: i64,
    /// Milliseconds; `i64::MAX` when the order does not expire.
    pub expires_at: i64,
    /// Checked again on every amend that could trade.
    pub post_only: bool,
    pub terms: Terms,
    /// The slot of the order's level in its ladder, while it rests.
    #[serde(skip)]
    pub level: u32,
    #[serde(skip)]
    pub prev: u32,
    #[serde(skip)]
    pub next: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Terms {
    Bid(BidTerms),
    Ask(AskTerms),
}

/// A bid's constraints compiled to masks, so checking an ask costs a few integer tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BidTerms {
    pub hours: u32,
    pub min_vram_gb: u32,
    /// Bit `i` admits the engine's region `i`; all ones admits any region.
    pub region_mask: u64,
    pub interconnect_mask: u8,
    pub vendor_mask: u8,
    pub min_reputation: Reputation,
    pub single_node: bool,
    pub all_or_none: bool,
    pub min_fill: u32,
    /// Placed with `PlaceWith`: its leases are metered. Snapshots write this and `extras`
    /// beside the order (format 5), so the order's own image is format 4's.
    #[serde(skip)]
    pub metered: bool,
    /// Options beyond the default, boxed: most bids have none.
    #[serde(skip)]
    pub extras: Option<Box<BidExtras>>,
}

/// A bid's options beyond its constraints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BidExtras {
    /// Asks on these nodes are never taken.
    pub exclude: Vec<NodeRef>,
    /// Set when a provider failure re-bids: the time in force and terms to place again.
    pub rebid: Option<(TimeInForce, BidSpec)>,
    /// A check (`PlaceCheck`): only this node's asks are taken, on probation or not. A
    /// check is immediate-or-cancel and never rests, so no snapshot holds one.
    #[serde(skip)]
    pub check: Option<NodeRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AskTerms {
    pub node: NodeId,
    pub vendor: Vendor,
    pub vram_gb: u32,
    pub interconnect: Interconnect,
    pub region: Region,
    pub region_bit: u8,
    pub available_until: i64,
    /// The provider's score when the ask was accepted.
    pub reputation: Reputation,
    /// Placed with `PlaceWith`: its node's report and the provider's bond stand behind it,
    /// and behind its leases. Snapshots write it through the node's asks (format 6).
    #[serde(skip)]
    pub backed: bool,
    /// Its node is on probation in its market (the market has a checker, which has not
    /// passed the node): only the checker's check of that node takes it. Set again from
    /// the checks on restore.
    #[serde(skip)]
    pub probation: bool,
}

impl Order {
    pub fn bid(&self) -> Option<&BidTerms> {
        match &self.terms {
            Terms::Bid(b) => Some(b),
            Terms::Ask(_) => None,
        }
    }
}

/// The slab of orders.
#[derive(Debug, Default)]
pub(crate) struct Orders {
    slots: Vec<Option<Order>>,
    free: Vec<u32>,
}

impl Orders {
    pub fn insert(&mut self, order: Order) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(order);
                slot
            }
            None => {
                self.slots.push(Some(order));
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub fn remove(&mut self, slot: u32) -> Order {
        self.free.push(slot);
        self.slots[slot as usize]
            .take()
            .expect("a removed slot held an order")
    }

    pub fn get(&self, slot: u32) -> &Order {
        self.slots[slot as usize]
            .as_ref()
            .expect("a linked slot holds an order")
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut Order {
        self.slots[slot as usize]
            .as_mut()
            .expect("a linked slot holds an order")
    }

    /// Whether `slot` holds order `id` with its expiry at `expires_at` (a timer entry that
    /// still applies).
    pub fn holds(&self, slot: u32, id: u64, expires_at: i64) -> bool {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|o| o.id.0 == id && o.expires_at == expires_at)
    }

    pub fn live_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn live(&self) -> impl Iterator<Item = (u32, &Order)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i as u32, o)))
    }

    pub fn live_mut(&mut self) -> impl Iterator<Item = (u32, &mut Order)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, o)| o.as_mut().map(|o| (i as u32, o)))
    }
}

/// One price level: a FIFO of order slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Level {
    pub price: i64,
    pub head: u32,
    pub tail: u32,
    pub gpus: u64,
    pub orders: u32,
}

/// One side of one market's book.
///
/// Levels live in slots that stay put while the level exists, and every resting order knows
/// its level's slot, so cancelling or filling an order never searches for its level; only a
/// new order (or a level that empties) looks up the sorted rank list.
#[derive(Debug, Clone)]
pub(crate) struct Ladder {
    side: Side,
    slots: Vec<Level>,
    free: Vec<u32>,
    /// `(key, slot)` sorted worst-to-best: ascending keys, where a larger key is a better
    /// price on this side, so the best level is the last element.
    ranks: Vec<(i64, u32)>,
}

impl Ladder {
    pub fn new(side: Side) -> Self {
        Ladder {
            side,
            slots: Vec::new(),
            free: Vec::new(),
            ranks: Vec::new(),
        }
    }

    /// Larger keys are better prices on this side.
    fn key(&self, price: i64) -> i64 {
        match self.side {
            Side::Bid => price,
            Side::Ask => -price,
        }
    }

    /// The rank of the level with `key`, or where it would be inserted.
    fn rank(&self, key: i64) -> Result<usize, usize> {
        // Most activity is near the best price, at the end of the vector.
        match self.ranks.last() {
            Some(&(best, _)) if best == key => Ok(self.ranks.len() - 1),
            Some(&(best, _)) if best < key => Err(self.ranks.len()),
            _ => self.ranks.binary_search_by(|(k, _)| k.cmp(&key)),
        }
    }

    /// The best level's price, if any order rests on this side.
    pub fn best_price(&self) -> Option<i64> {
        self.ranks
            .last()
            .map(|&(_, slot)| self.slots[slot as usize].price)
    }

    /// Levels best first.
    pub fn levels(&self) -> impl Iterator<Item = &Level> {
        self.ranks
            .iter()
            .rev()
            .map(|&(_, slot)| &self.slots[slot as usize])
    }

    /// Appends the order in `slot` at the back of its price level.
    pub fn push_back(&mut self, orders: &mut Orders, slot: u32) {
        let (price, gpus) = {
            let o = orders.get(slot);
            (o.price, o.remaining)
        };
        let key = self.key(price);
        let level_slot = match self.ranks.last() {
            Some(&(best, slot)) if best == key => slot,
            _ => self.level_for(key, price),
        };
        let level = &mut self.slots[level_slot as usize];
        let tail = level.tail;
        {
            let o = orders.get_mut(slot);
            o.prev = tail;
            o.next = NIL;
            o.level = level_slot;
        }
        if tail == NIL {
            level.head = slot;
        } else {
            orders.get_mut(tail).next = slot;
        }
        level.tail = slot;
        // At most 2^32 slots of at most 65,536 GPUs each: a level's total fits a u64.
        level.gpus += u64::from(gpus);
        level.orders += 1;
    }

    /// The slot of the level at `key`, made when there is none. Kept apart from
    /// `push_back`'s usual case, an order joining the best level, which then costs one
    /// comparison (measured: 1,135 -> 1,129 instructions per plain message with the
    /// emptied-level path below split off the same way).
    fn level_for(&mut self, key: i64, price: i64) -> u32 {
        match self.rank(key) {
            Ok(rank) => self.ranks[rank].1,
            Err(rank) => {
                let level = Level {
                    price,
                    head: NIL,
                    tail: NIL,
                    gpus: 0,
                    orders: 0,
                };
                let level_slot = match self.free.pop() {
                    Some(free) => {
                        self.slots[free as usize] = level;
                        free
                    }
                    None => {
                        self.slots.push(level);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.ranks.insert(rank, (key, level_slot));
                level_slot
            }
        }
    }

    /// Unlinks the order in `slot` (still stored in the slab) from its level.
    pub fn unlink(&mut self, orders: &mut Orders, slot: u32) {
        let (price, prev, next, gpus, level_slot) = {
            let o = orders.get(slot);
            (o.price, o.prev, o.next, o.remaining, o.level)
        };
        let level = &mut self.slots[level_slot as usize];
        if prev == NIL {
            level.head = next;
        } else {
            orders.get_mut(prev).next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            orders.get_mut(next).prev = prev;
        }
        level.gpus -= u64::from(gpus);
        level.orders -= 1;
        if level.orders == 0 {
            self.drop_level(price, level_slot);
        }
    }

    fn drop_level(&mut self, price: i64, level_slot: u32) {
        let rank = self
            .rank(self.key(price))
            .expect("a resting order's level is ranked");
        self.ranks.remove(rank);
        self.free.push(level_slot);
    }

    /// Lowers the GPUs counted at the order's level (the order keeps its place).
    pub fn reduce(&mut self, level_slot: u32, by: u32) {
        self.slots[level_slot as usize].gpus -= u64::from(by);
    }

    /// Slots in priority order, best level first.
    pub fn iter<'a>(&'a self, orders: &'a Orders) -> impl Iterator<Item = u32> + 'a {
        self.levels().flat_map(move |level| {
            std::iter::successors((level.head != NIL).then_some(level.head), move |&s| {
                let next = orders.get(s).next;
                (next != NIL).then_some(next)
            })
        })
    }
}
