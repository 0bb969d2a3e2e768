//! Queries. They read state and never change it.

use contract::{
    AccountId, Amount, Exclusion, Explanation, GpuStatus, LeaseId, MarketConfig, MarketId, NodeId,
    NodeRef, OrderId, Price, Rejection, Reputation, Side, SkippedOrder, Timestamp,
};

use crate::book::{Ladder, Terms};
use crate::matching::{attribute_exclusion, fill_quantity};
use crate::{Balance, BondBalance, Depth, DepthLevel, Engine, Funds, Lease, RestingOrder};

impl Engine {
    pub fn balance(&self, account: AccountId) -> Balance {
        let f = self.funds.get(&account).copied().unwrap_or_default();
        Balance {
            available: Amount::from_micros(f.available),
            held: Amount::from_micros(f.held),
            in_lease: Amount::from_micros(f.in_lease),
            settling: Amount::from_micros(f.settling),
            bonded: Amount::from_micros(f.bonded),
        }
    }

    /// The sum of every account's buckets (bonds included) and the insurance fund in
    /// micro-units: changes only with deposits and withdrawals. Each account's total fits an `i64`; their sum need not, so it is an
    /// `i128`.
    pub fn total_money(&self) -> i128 {
        self.funds.values().map(Funds::total).sum::<i128>() + i128::from(self.insurance)
    }

    /// A provider's bond in `market`; `None` where it never posted one there.
    pub fn bond(&self, provider: AccountId, market: MarketId) -> Option<BondBalance> {
        let index = *self.market_index.get(&market)?;
        let b = self.bonds.get(&(provider, index))?;
        Some(BondBalance {
            free: Amount::from_micros(b.free),
            held: Amount::from_micros(b.held),
            unbonding: Amount::from_micros(b.unbonding),
        })
    }

    /// A provider's bonds in every market it posted in, in market order.
    pub fn bonds_of(&self, provider: AccountId) -> Vec<(MarketId, BondBalance)> {
        self.markets
            .iter()
            .filter_map(|m| Some((m.id, self.bond(provider, m.id)?)))
            .collect()
    }

    /// A provider's withdrawn bond waiting for its release: market, amount, release time.
    pub fn unbondings_of(&self, provider: AccountId) -> Vec<(MarketId, Amount, Timestamp)> {
        self.unbondings
            .values()
            .filter(|u| u.provider == provider)
            .map(|u| {
                (
                    self.markets[u.market as usize].id,
                    Amount::from_micros(u.amount),
                    Timestamp(u.release_at),
                )
            })
            .collect()
    }

    /// A provider's nodes as the engine knows them: name, whether silent, and the GPUs of
    /// the latest signed report it accepted.
    pub fn nodes_of(&self, provider: AccountId) -> Vec<(NodeId, bool, &[GpuStatus])> {
        let mut nodes: Vec<_> = self
            .nodes
            .list()
            .iter()
            .filter(|n| n.key.provider == provider && n.last_seen.is_some())
            .map(|n| (n.key.node, n.silent, &n.gpus[..]))
            .collect();
        nodes.sort_by_key(|(node, ..)| *node);
        nodes
    }

    /// The markets whose checker `account` is, in market order.
    pub fn checked_by(&self, account: AccountId) -> Vec<MarketId> {
        self.markets
            .iter()
            .filter(|m| m.checker == Some(account))
            .map(|m| m.id)
            .collect()
    }

    /// The nodes with resting asks in `market`, in node order: each with its cheapest ask's
    /// price and whether it is on probation there (what its checker tests first).
    pub fn checkable(&self, market: MarketId) -> Vec<(NodeRef, Price, bool)> {
        let Some(&index) = self.market_index.get(&market) else {
            return Vec::new();
        };
        let mut nodes: std::collections::BTreeMap<NodeRef, (Price, bool)> = Default::default();
        // Best (cheapest) first, so the first ask of a node is its cheapest.
        for slot in self.markets[index as usize].asks.iter(&self.orders) {
            let o = self.orders.get(slot);
            if let Terms::Ask(a) = &o.terms {
                let node = NodeRef {
                    provider: o.account,
                    node: a.node,
                };
                nodes
                    .entry(node)
                    .or_insert((Price::from_micros(o.price), a.probation));
            }
        }
        nodes.into_iter().map(|(n, (p, on))| (n, p, on)).collect()
    }

    /// The market's insurance fund: what slashes left after crediting buyers.
    pub fn insurance(&self) -> Amount {
        Amount::from_micros(self.insurance)
    }

    /// The node a reported GPU UUID belongs to.
    pub fn gpu_owner(&self, uuid: &contract::ShortText) -> Option<contract::NodeRef> {
        let index = *self.gpu_owners.get(uuid)?;
        Some(self.nodes.list()[index as usize].key)
    }

    pub fn order(&self, order_id: OrderId) -> Option<RestingOrder> {
        let slot = self.order_index.get(order_id)?;
        let o = self.orders.get(slot);
        Some(RestingOrder {
            id: o.id,
            account: o.account,
            market: self.markets[o.market as usize].id,
            side: o.side,
            price: Price::from_micros(o.price),
            remaining: o.remaining,
            filled: o.filled,
            hold: Amount::from_micros(o.hold),
        })
    }

    pub fn lease(&self, lease_id: LeaseId) -> Option<&Lease> {
        self.leases.get(lease_id)
    }

    /// Every running lease, in no particular order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.iter()
    }

    /// A market's parameters; `None` for a market the engine does not have.
    pub fn market_config(&self, market: MarketId) -> Option<&MarketConfig> {
        let index = *self.market_index.get(&market)?;
        Some(&self.markets[index as usize].config)
    }

    /// The hour (its start) the account's storage was last charged for.
    pub fn storage_charged(&self, account: AccountId) -> Option<Timestamp> {
        self.storage_charged.get(&account).copied().map(Timestamp)
    }

    pub fn reputation(&self, provider: AccountId) -> Reputation {
        self.reputations
            .get(&provider)
            .copied()
            .unwrap_or(Reputation::MIN)
    }

    /// The best `levels` price levels of each side of a market.
    pub fn depth(&self, market: MarketId, levels: usize) -> Option<Depth> {
        let m = &self.markets[*self.market_index.get(&market)? as usize];
        let side = |ladder: &Ladder| {
            ladder
                .levels()
                .take(levels)
                .map(|l| DepthLevel {
                    price: Price::from_micros(l.price),
                    gpus: l.gpus,
                    orders: l.orders,
                })
                .collect()
        };
        Some(Depth {
            market,
            bids: side(&m.bids),
            asks: side(&m.asks),
        })
    }

    /// Every counter-order at a price the resting order would accept, in priority order,
    /// with the constraint that keeps them apart (at most `limit` of them).
    pub fn explain(&self, order_id: OrderId, limit: usize) -> Result<Explanation, Rejection> {
        let slot = self
            .order_index
            .get(order_id)
            .ok_or(Rejection::UnknownOrder { order_id })?;
        let order = self.orders.get(slot);
        let market = &self.markets[order.market as usize];
        let opposite = match order.side {
            Side::Bid => &market.asks,
            Side::Ask => &market.bids,
        };
        let mut skipped = Vec::new();
        let mut truncated = false;
        for other_slot in opposite.iter(&self.orders) {
            let other = self.orders.get(other_slot);
            let crosses = match order.side {
                Side::Bid => other.price <= order.price,
                Side::Ask => other.price >= order.price,
            };
            if !crosses {
                break;
            }
            if skipped.len() == limit {
                truncated = true;
                break;
            }
            let (bid, b, a) = match order.side {
                Side::Bid => (order.bid(), order, other),
                Side::Ask => (other.bid(), other, order),
            };
            let (Some(bid), Terms::Ask(ask)) = (bid, &a.terms) else {
                unreachable!("ladders hold one side each")
            };
            let reason = attribute_exclusion(bid, ask, a.account, self.now)
                .or((b.account == a.account).then_some(Exclusion::SameAccount))
                .or_else(|| fill_quantity(bid, b.remaining, a.remaining, false).err());
            if let Some(reason) = reason {
                skipped.push(SkippedOrder {
                    order_id: other.id,
                    price: Price::from_micros(other.price),
                    gpus: other.remaining,
                    reason,
                });
            }
        }
        Ok(Explanation {
            order_id,
            skipped,
            truncated,
        })
    }
}
