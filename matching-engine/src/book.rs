//! Order storage and price ladders.
//!
//! Orders live in one slab (a `Vec` with a free list) and are linked into FIFO queues per
//! price level by slot index, so adding, removing from the middle and popping the front are
//! O(1) and allocate nothing once the slab has grown. A ladder keeps its levels in a `Vec`
//! sorted worst-to-best, so the best level is the last element: the levels that change most
//! (near the touch) are the cheapest to insert and remove.

use contract::{
    AccountId, ClientOrderId, Interconnect, NodeId, OrderId, Region, Reputation, Side, Vendor,
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

    pub fn live_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn live(&self) -> impl Iterator<Item = (u32, &Order)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i as u32, o)))
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
#[derive(Debug, Clone)]
pub(crate) struct Ladder {
    side: Side,
    /// Sorted worst-to-best: ascending prices for bids, descending for asks.
    pub levels: Vec<Level>,
}

impl Ladder {
    pub fn new(side: Side) -> Self {
        Ladder {
            side,
            levels: Vec::new(),
        }
    }

    /// Larger keys are better prices on this side.
    fn key(&self, price: i64) -> i64 {
        match self.side {
            Side::Bid => price,
            Side::Ask => -price,
        }
    }

    /// The index of the level at `price`, or where it would be inserted.
    fn find(&self, price: i64) -> Result<usize, usize> {
        let key = self.key(price);
        // Most activity is near the best price, at the end of the vector.
        match self.levels.last() {
            Some(best) if self.key(best.price) == key => Ok(self.levels.len() - 1),
            Some(best) if self.key(best.price) < key => Err(self.levels.len()),
            _ => self
                .levels
                .binary_search_by(|l| self.key(l.price).cmp(&key)),
        }
    }

    /// Appends the order in `slot` at the back of its price level.
    pub fn push_back(&mut self, orders: &mut Orders, slot: u32) {
        let (price, gpus) = {
            let o = orders.get(slot);
            (o.price, o.remaining)
        };
        let idx = match self.find(price) {
            Ok(i) => i,
            Err(i) => {
                self.levels.insert(
                    i,
                    Level {
                        price,
                        head: NIL,
                        tail: NIL,
                        gpus: 0,
                        orders: 0,
                    },
                );
                i
            }
        };
        let level = &mut self.levels[idx];
        let tail = level.tail;
        {
            let o = orders.get_mut(slot);
            o.prev = tail;
            o.next = NIL;
        }
        if tail == NIL {
            level.head = slot;
        } else {
            orders.get_mut(tail).next = slot;
        }
        level.tail = slot;
        level.gpus += u64::from(gpus);
        level.orders += 1;
    }

    /// Unlinks the order in `slot` (still stored in the slab) from its level.
    pub fn unlink(&mut self, orders: &mut Orders, slot: u32) {
        let (price, prev, next, gpus) = {
            let o = orders.get(slot);
            (o.price, o.prev, o.next, o.remaining)
        };
        let idx = self.find(price).expect("a resting order's level exists");
        let level = &mut self.levels[idx];
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
            self.levels.remove(idx);
        }
    }

    /// Lowers the GPUs counted at the order's level (the order keeps its place).
    pub fn reduce(&mut self, price: i64, by: u32) {
        let idx = self.find(price).expect("a resting order's level exists");
        self.levels[idx].gpus -= u64::from(by);
    }

    /// Slots in priority order, best level first.
    pub fn iter<'a>(&'a self, orders: &'a Orders) -> impl Iterator<Item = u32> + 'a {
        self.levels.iter().rev().flat_map(move |level| {
            std::iter::successors((level.head != NIL).then_some(level.head), move |&s| {
                let next = orders.get(s).next;
                (next != NIL).then_some(next)
            })
        })
    }
}
