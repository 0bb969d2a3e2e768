//! Checks: a market with a checker (`AppointChecker`) sells no node the checker has not
//! tested. Until the checker records a passed check of a node in the market, the node's
//! asks there are on probation: only the checker's check of that node (`PlaceCheck`, an
//! immediate-or-cancel bid that takes only that node's asks) may take them. The checker
//! runs a known-answer job on the lease and records the verdict (`RecordCheck`), which ends
//! the lease: stopped as paid work when it passed, rejected as failed verification (a
//! slashed provider failure) when it did not, and then the node is on probation again.

use contract::{
    AccountId, Event, FailureReason, LeaseId, MarketId, NewOrder, NodeRef, OrderOptions,
    OrderTerms, Rejection, TimeInForce,
};

use crate::book::{Order, Terms};
use crate::Engine;

impl Engine {
    /// Whether `node`'s asks in market `market` (an index) are on probation.
    pub(crate) fn on_probation(&self, market: u32, node: NodeRef) -> bool {
        self.markets[market as usize].checker.is_some() && !self.passed.contains(&(market, node))
    }

    pub(crate) fn appoint_checker(
        &mut self,
        market: MarketId,
        account: AccountId,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let index = self.market_of(market)?;
        if account == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account });
        }
        self.markets[index as usize].checker = Some(account);
        out.push(Event::CheckerAppointed { market, account });
        // Probation only excludes trades: nothing that rests has to match again.
        let passed = &self.passed;
        for (_, order) in self.orders.live_mut() {
            if order.market != index {
                continue;
            }
            let provider = order.account;
            if let Terms::Ask(terms) = &mut order.terms {
                let node = NodeRef {
                    provider,
                    node: terms.node,
                };
                terms.probation = !passed.contains(&(index, node));
            }
        }
        Ok(())
    }

    /// The checker's bid for one node: placed as `PlaceWith` places a bid (metered leases),
    /// taking only `node`'s asks.
    pub(crate) fn place_check(
        &mut self,
        order: &NewOrder,
        node: NodeRef,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let market = self.market_of(order.market)?;
        if self.markets[market as usize].checker != Some(order.account) {
            return Err(Rejection::NotTheChecker {
                account: order.account,
                market: order.market,
            });
        }
        if order.tif != TimeInForce::Ioc || !matches!(order.terms, OrderTerms::Bid(_)) {
            return Err(Rejection::CheckNotImmediate);
        }
        if order.client_id.is_reserved() {
            return Err(Rejection::ReservedClientOrderId {
                client_id: order.client_id,
            });
        }
        self.place(order, Some(&OrderOptions::default()), Some(node), out)
    }

    /// The checker's verdict on lease `lease_id` (its own): `NodeChecked`, then the lease's
    /// end, then the node's asks in the market on or off probation. A passed node's asks
    /// match again where they rest, as a risen reputation's do.
    pub(crate) fn record_check(
        &mut self,
        lease_id: LeaseId,
        passed: bool,
        detail: &FailureReason,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let lease = self
            .leases
            .get(lease_id)
            .ok_or_else(|| self.not_running(lease_id))?;
        let market = self.market_of(lease.market)?;
        let checker = lease.buyer;
        if self.markets[market as usize].checker != Some(checker) {
            return Err(Rejection::NotTheChecker {
                account: checker,
                market: lease.market,
            });
        }
        let node = NodeRef {
            provider: lease.provider,
            node: lease.node,
        };
        let checked = Event::NodeChecked {
            market: lease.market,
            provider: node.provider,
            node: node.node,
            lease_id,
            checker,
            passed,
            detail: detail.clone(),
        };
        // Both endings check that the lease's money fits before they change anything.
        let mark = out.len();
        out.push(checked);
        let ended = if passed {
            self.stop_lease(checker, lease_id, out)
        } else {
            self.reject_work(lease_id, detail, out)
        };
        if let Err(rejection) = ended {
            out.truncate(mark);
            return Err(rejection);
        }
        let of_node = |o: &Order| {
            o.market == market
                && o.account == node.provider
                && matches!(&o.terms, Terms::Ask(a) if a.node == node.node)
        };
        if passed {
            self.passed.insert((market, node));
            self.rematch_asks(
                of_node,
                |terms| {
                    let before = terms.probation.then(|| terms.clone());
                    terms.probation = false;
                    before
                },
                out,
            );
        } else {
            self.passed.remove(&(market, node));
            for (_, order) in self.orders.live_mut() {
                if of_node(order) {
                    if let Terms::Ask(terms) = &mut order.terms {
                        terms.probation = true;
                    }
                }
            }
        }
        Ok(())
    }
}
