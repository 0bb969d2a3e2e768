//! The double-entry mapping: which postings an event makes. Pure: no I/O, no clock.
//!
//! Every amount posted is an amount the event states; the journal never recomputes engine
//! arithmetic, so a posting always traces back to a field of one event. Each event that
//! moves money becomes one journal transaction whose postings sum to zero, and a
//! transaction that would not is refused ([`PostingError::Unbalanced`]) rather than booked.

use contract::{AccountId, Amount, Event};

/// Where money sits. `Available`, `Held` and `InLease` are the engine's buckets of a trading
/// account; `Fees` is the market account's income; `External` is each account's contra
/// bucket for money that entered or left the market, so it holds minus the account's net
/// deposits and the grand total over every bucket of every account is always zero.
///
/// A provider's `Bond` (free and held behind its GPUs: the engine's split, not a movement)
/// and `Unbonding` (withdrawn, waiting for the delay) are its own buckets; the market
/// account's `Insurance` receives what slashes leave after crediting buyers. Later slices
/// add buckets here and in the migration's `bucket` domain together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    Available,
    Held,
    InLease,
    /// On its way out through the chain: requested withdrawals and open settlement batches.
    Settling,
    Fees,
    External,
    Bond,
    Unbonding,
    Insurance,
}

impl Bucket {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Available => "available",
            Bucket::Held => "held",
            Bucket::InLease => "in_lease",
            Bucket::Settling => "settling",
            Bucket::Fees => "fees",
            Bucket::External => "external",
            Bucket::Bond => "bond",
            Bucket::Unbonding => "unbonding",
            Bucket::Insurance => "insurance",
        }
    }

    const ALL: [Bucket; 9] = [
        Bucket::Available,
        Bucket::Held,
        Bucket::InLease,
        Bucket::Settling,
        Bucket::Fees,
        Bucket::External,
        Bucket::Bond,
        Bucket::Unbonding,
        Bucket::Insurance,
    ];

    /// Where an account's spendable money is booked. The market account never trades (the
    /// engine refuses its orders and deposits), so all its spendable money is fee income and
    /// is booked as `Fees`: a withdrawal by the market account withdraws fees, and the
    /// ledger's buckets stay one-to-one with the engine's.
    fn spendable(account: AccountId) -> Bucket {
        if account == AccountId::MARKET {
            Bucket::Fees
        } else {
            Bucket::Available
        }
    }
}

impl std::str::FromStr for Bucket {
    type Err = ();
    /// A bucket from its stored name.
    fn from_str(s: &str) -> Result<Bucket, ()> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == s).ok_or(())
    }
}

/// One leg of a journal transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountId,
    pub bucket: Bucket,
    pub amount: Amount,
}

/// Why an event cannot be booked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("the postings of {kind} sum to {total} micro-units, not zero")]
    Unbalanced { kind: &'static str, total: i128 },
    #[error("{kind} states an amount of {micros} micro-units, which cannot be negated")]
    Overflow { kind: &'static str, micros: i64 },
}

/// The postings `event` makes, in a fixed order: the legs of one balanced journal
/// transaction, or none when the event moves no money. Zero amounts are left out.
pub fn postings(event: &Event) -> Result<Vec<Posting>, PostingError> {
    let kind = event.kind();
    let mut legs = Legs {
        kind,
        postings: Vec::new(),
    };
    match *event {
        // A chain deposit books as any deposit; its transaction hash is in the read models.
        Event::Deposited { account, amount }
        | Event::ChainDeposited {
            account, amount, ..
        } => {
            legs.transfer(
                account,
                Bucket::External,
                account,
                Bucket::spendable(account),
                amount,
            )?;
        }
        Event::Withdrawn { account, amount } => {
            legs.transfer(
                account,
                Bucket::spendable(account),
                account,
                Bucket::External,
                amount,
            )?;
        }
        Event::OrderAccepted {
            ref order, hold, ..
        } => {
            let account = order.account;
            legs.transfer(
                account,
                Bucket::spendable(account),
                account,
                Bucket::Held,
                hold,
            )?;
        }
        Event::OrderAmended {
            account,
            hold_change,
            ..
        } => {
            legs.transfer(
                account,
                Bucket::spendable(account),
                account,
                Bucket::Held,
                hold_change,
            )?;
        }
        Event::OrderCancelled {
            account, released, ..
        } => {
            legs.transfer(
                account,
                Bucket::Held,
                account,
                Bucket::spendable(account),
                released,
            )?;
        }
        Event::LeaseCreated {
            buyer,
            cost,
            released,
            ..
        } => {
            legs.transfer(buyer, Bucket::Held, buyer, Bucket::InLease, cost)?;
            legs.transfer(
                buyer,
                Bucket::Held,
                buyer,
                Bucket::spendable(buyer),
                released,
            )?;
        }
        Event::LeaseEnded {
            buyer,
            provider,
            charged,
            fee,
            provider_earned,
            refunded,
            ..
        } => {
            // The charge leaves the lease and splits between provider and market; the rest of
            // the lease's cost goes back to the buyer. The event states all four amounts, and
            // the balance check below catches a charge that is not fee + provider_earned.
            legs.debit(buyer, Bucket::InLease, charged)?;
            legs.credit(provider, Bucket::spendable(provider), provider_earned);
            legs.credit(AccountId::MARKET, Bucket::Fees, fee);
            legs.transfer(
                buyer,
                Bucket::InLease,
                buyer,
                Bucket::spendable(buyer),
                refunded,
            )?;
        }
        Event::WithdrawalRequested { account, amount } => {
            legs.transfer(
                account,
                Bucket::spendable(account),
                account,
                Bucket::Settling,
                amount,
            )?;
        }
        Event::SettlementOpened { ref payouts, .. } => {
            for p in payouts {
                legs.transfer(
                    p.account,
                    Bucket::spendable(p.account),
                    p.account,
                    Bucket::Settling,
                    p.from_available,
                )?;
            }
        }
        Event::SettlementConfirmed { ref payouts, .. } => {
            for p in payouts {
                legs.transfer(
                    p.account,
                    Bucket::Settling,
                    p.account,
                    Bucket::External,
                    p.amount,
                )?;
            }
        }
        Event::SettlementFailed { ref payouts, .. } => {
            for p in payouts {
                legs.transfer(
                    p.account,
                    Bucket::Settling,
                    p.account,
                    Bucket::spendable(p.account),
                    p.amount,
                )?;
            }
        }
        Event::BondPosted {
            provider, amount, ..
        } => {
            legs.transfer(
                provider,
                Bucket::Available,
                provider,
                Bucket::Bond,
                amount,
            )?;
        }
        Event::BondUnbonding {
            provider, amount, ..
        } => {
            legs.transfer(provider, Bucket::Bond, provider, Bucket::Unbonding, amount)?;
        }
        Event::BondReleased {
            provider, amount, ..
        } => {
            legs.transfer(
                provider,
                Bucket::Unbonding,
                provider,
                Bucket::Available,
                amount,
            )?;
        }
        Event::BondSlashed {
            provider,
            buyer,
            buyer_credit,
            insurance,
            ..
        } => {
            legs.transfer(
                provider,
                Bucket::Bond,
                buyer,
                Bucket::spendable(buyer),
                buyer_credit,
            )?;
            legs.transfer(
                provider,
                Bucket::Bond,
                AccountId::MARKET,
                Bucket::Insurance,
                insurance,
            )?;
        }
        Event::StorageCharged {
            account, amount, ..
        } => {
            legs.transfer(
                account,
                Bucket::spendable(account),
                AccountId::MARKET,
                Bucket::Fees,
                amount,
            )?;
        }
        Event::MarketCreated { .. }
        | Event::ReputationSet { .. }
        // A check's money moves with its lease's end, which follows it.
        | Event::CheckerAppointed { .. }
        | Event::NodeChecked { .. }
        | Event::LeaseStarted { .. }
        | Event::NodeHeartbeat { .. }
        | Event::PayoutAddressSet { .. }
        // Accruals are informational: a lease's money moves once, at its `LeaseEnded`.
        | Event::MarketConfigured { .. }
        | Event::NodeReported { .. }
        | Event::NodeSilent { .. }
        | Event::LeaseAccrued { .. }
        | Event::LeaseClosed { .. }
        // A held payment moves at its lease's `LeaseEnded`, which follows.
        | Event::PaymentHeld { .. }
        | Event::OrderRebid { .. }
        | Event::RebidRefused { .. } => {}
    }
    let total: i128 = legs
        .postings
        .iter()
        .map(|p| i128::from(p.amount.micros()))
        .sum();
    if total != 0 {
        return Err(PostingError::Unbalanced { kind, total });
    }
    Ok(legs.postings)
}

struct Legs {
    kind: &'static str,
    postings: Vec<Posting>,
}

impl Legs {
    fn credit(&mut self, account: AccountId, bucket: Bucket, amount: Amount) {
        if amount != Amount::ZERO {
            self.postings.push(Posting {
                account,
                bucket,
                amount,
            });
        }
    }

    fn debit(
        &mut self,
        account: AccountId,
        bucket: Bucket,
        amount: Amount,
    ) -> Result<(), PostingError> {
        let negated = Amount::ZERO
            .checked_sub(amount)
            .ok_or(PostingError::Overflow {
                kind: self.kind,
                micros: amount.micros(),
            })?;
        self.credit(account, bucket, negated);
        Ok(())
    }

    /// Moves `amount` from one bucket to another (a negative amount moves it back).
    fn transfer(
        &mut self,
        from: AccountId,
        from_bucket: Bucket,
        to: AccountId,
        to_bucket: Bucket,
        amount: Amount,
    ) -> Result<(), PostingError> {
        self.debit(from, from_bucket, amount)?;
        self.credit(to, to_bucket, amount);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{
        BidSpec, CancelReason, ClientOrderId, FeeRate, Gpus, Hours, LeaseEndReason, LeaseId,
        MarketId, NewOrder, NodeId, OrderId, OrderTerms, Price, Reputation, Side, TimeInForce,
        Timestamp,
    };

    const BUYER: AccountId = AccountId(7);
    const PROVIDER: AccountId = AccountId(9);

    fn amount(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    /// Given an event, then these postings: `(account, bucket, amount)`.
    fn check(event: Event, expected: &[(u64, Bucket, &str)]) {
        let expected: Vec<Posting> = expected
            .iter()
            .map(|&(account, bucket, a)| Posting {
                account: AccountId(account),
                bucket,
                amount: amount(a),
            })
            .collect();
        assert_eq!(postings(&event), Ok(expected), "{event:?}");
    }

    fn bid(hold: &str) -> Event {
        let market = MarketId::parse("H100-80GB").unwrap();
        Event::OrderAccepted {
            order_id: OrderId(1),
            order: NewOrder {
                account: BUYER,
                client_id: ClientOrderId(1),
                market,
                price: Price::parse("2").unwrap(),
                gpus: Gpus::new(4).unwrap(),
                tif: TimeInForce::Gtc,
                post_only: false,
                terms: OrderTerms::Bid(BidSpec::any(Hours::new(3).unwrap())),
            },
            hold: amount(hold),
            reputation: Reputation::new(0).unwrap(),
        }
    }

    fn lease_ended(charged: &str, fee: &str, earned: &str, refunded: &str) -> Event {
        Event::LeaseEnded {
            lease_id: LeaseId(1),
            buyer: BUYER,
            provider: PROVIDER,
            hours_used: "1.5".parse().unwrap(),
            charged: amount(charged),
            fee: amount(fee),
            provider_earned: amount(earned),
            refunded: amount(refunded),
            reason: LeaseEndReason::Completed,
        }
    }

    #[test]
    fn deposits_and_withdrawals_cross_the_external_bucket() {
        use Bucket::*;
        check(
            Event::Deposited {
                account: BUYER,
                amount: amount("100"),
            },
            &[(7, External, "-100"), (7, Available, "100")],
        );
        check(
            Event::Withdrawn {
                account: BUYER,
                amount: amount("40.5"),
            },
            &[(7, Available, "-40.5"), (7, External, "40.5")],
        );
        // The market account's spendable money is its fee income.
        check(
            Event::Withdrawn {
                account: AccountId::MARKET,
                amount: amount("3"),
            },
            &[(0, Fees, "-3"), (0, External, "3")],
        );
    }

    #[test]
    fn settlement_moves_through_settling_to_external_or_back() {
        use contract::{ChainAddress, FailureReason, SettlementId, SettlementPayout, TxHash};
        use Bucket::*;
        let payouts = vec![
            SettlementPayout {
                account: BUYER,
                address: ChainAddress::parse("cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4")
                    .unwrap(),
                amount: amount("10"),
                from_available: amount("0"),
            },
            SettlementPayout {
                account: PROVIDER,
                address: ChainAddress::parse("cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4")
                    .unwrap(),
                amount: amount("4"),
                from_available: amount("4"),
            },
        ];
        check(
            Event::WithdrawalRequested {
                account: BUYER,
                amount: amount("10"),
            },
            &[(7, Available, "-10"), (7, Settling, "10")],
        );
        check(
            Event::ChainDeposited {
                account: BUYER,
                amount: amount("5"),
                tx_hash: TxHash([1; 32]),
                msg_index: 0,
            },
            &[(7, External, "-5"), (7, Available, "5")],
        );
        // The buyer's part was already settling since its request.
        check(
            Event::SettlementOpened {
                batch: SettlementId(1),
                payouts: payouts.clone(),
            },
            &[(9, Available, "-4"), (9, Settling, "4")],
        );
        check(
            Event::SettlementConfirmed {
                batch: SettlementId(1),
                tx_hash: TxHash([2; 32]),
                height: 3,
                payouts: payouts.clone(),
            },
            &[
                (7, Settling, "-10"),
                (7, External, "10"),
                (9, Settling, "-4"),
                (9, External, "4"),
            ],
        );
        check(
            Event::SettlementFailed {
                batch: SettlementId(1),
                reason: FailureReason::new("out of gas").unwrap(),
                payouts,
            },
            &[
                (7, Settling, "-10"),
                (7, Available, "10"),
                (9, Settling, "-4"),
                (9, Available, "4"),
            ],
        );
    }

    #[test]
    fn holds_move_between_available_and_held() {
        use Bucket::*;
        check(bid("24"), &[(7, Available, "-24"), (7, Held, "24")]);
        // An ask holds nothing, so it books nothing.
        check(bid("0"), &[]);
        let amended = |change: &str| Event::OrderAmended {
            order_id: OrderId(1),
            account: BUYER,
            price: Price::parse("2").unwrap(),
            remaining: Gpus::new(2).unwrap(),
            hold_change: amount(change),
            priority_kept: true,
        };
        check(amended("6"), &[(7, Available, "-6"), (7, Held, "6")]);
        check(amended("-12"), &[(7, Available, "12"), (7, Held, "-12")]);
        check(amended("0"), &[]);
        let cancelled = |released: &str| Event::OrderCancelled {
            order_id: OrderId(1),
            account: BUYER,
            remaining: 2,
            released: amount(released),
            reason: CancelReason::Requested,
        };
        check(cancelled("12"), &[(7, Held, "-12"), (7, Available, "12")]);
        check(cancelled("0"), &[]);
    }

    #[test]
    fn a_fill_moves_the_cost_into_the_lease_and_releases_the_improvement() {
        use Bucket::*;
        let created = |cost: &str, released: &str| Event::LeaseCreated {
            lease_id: LeaseId(1),
            market: MarketId::parse("H100-80GB").unwrap(),
            buyer: BUYER,
            provider: PROVIDER,
            node: NodeId::parse("fra-1").unwrap(),
            bid_order: OrderId(2),
            ask_order: OrderId(1),
            gpus: Gpus::new(4).unwrap(),
            price: Price::parse("1.9").unwrap(),
            start: Timestamp(0),
            hours: Hours::new(3).unwrap(),
            cost: amount(cost),
            released: amount(released),
            taker: Side::Bid,
            bid_remaining: 0,
            ask_remaining: 0,
        };
        check(
            created("22.8", "1.2"),
            &[
                (7, Held, "-22.8"),
                (7, InLease, "22.8"),
                (7, Held, "-1.2"),
                (7, Available, "1.2"),
            ],
        );
        check(
            created("22.8", "0"),
            &[(7, Held, "-22.8"), (7, InLease, "22.8")],
        );
    }

    #[test]
    fn a_lease_end_pays_provider_and_market_and_refunds_the_buyer() {
        use Bucket::*;
        check(
            lease_ended("11.4", "0.342", "11.058", "11.4"),
            &[
                (7, InLease, "-11.4"),
                (9, Available, "11.058"),
                (0, Fees, "0.342"),
                (7, InLease, "-11.4"),
                (7, Available, "11.4"),
            ],
        );
        // Nothing used: everything goes back.
        check(
            lease_ended("0", "0", "0", "22.8"),
            &[(7, InLease, "-22.8"), (7, Available, "22.8")],
        );
    }

    #[test]
    fn bonds_move_through_bond_and_unbonding_and_a_slash_pays_buyer_and_insurance() {
        use Bucket::*;
        let market = MarketId::parse("H100-80GB").unwrap();
        check(
            Event::BondPosted {
                provider: PROVIDER,
                market,
                amount: amount("300"),
            },
            &[(9, Available, "-300"), (9, Bond, "300")],
        );
        check(
            Event::BondUnbonding {
                provider: PROVIDER,
                market,
                amount: amount("120"),
                release_at: Timestamp(1),
            },
            &[(9, Bond, "-120"), (9, Unbonding, "120")],
        );
        check(
            Event::BondReleased {
                provider: PROVIDER,
                market,
                amount: amount("120"),
            },
            &[(9, Unbonding, "-120"), (9, Available, "120")],
        );
        check(
            Event::BondSlashed {
                lease_id: contract::LeaseId(1),
                market,
                provider: PROVIDER,
                node: contract::NodeId::parse("node-a").unwrap(),
                buyer: BUYER,
                slashed: amount("50"),
                buyer_credit: amount("7.2"),
                insurance: amount("42.8"),
                cause: contract::LeaseEndCause::ProviderStopped,
            },
            &[
                (9, Bond, "-7.2"),
                (7, Available, "7.2"),
                (9, Bond, "-42.8"),
                (0, Insurance, "42.8"),
            ],
        );
    }

    #[test]
    fn events_that_move_no_money_book_nothing() {
        check(
            Event::MarketCreated {
                market: MarketId::parse("H100-80GB").unwrap(),
                tick: Price::parse("0.01").unwrap(),
                fee: FeeRate::new(300).unwrap(),
            },
            &[],
        );
        check(
            Event::ReputationSet {
                provider: PROVIDER,
                score: Reputation::new(900).unwrap(),
            },
            &[],
        );
        check(
            Event::NodeChecked {
                market: MarketId::parse("H100-80GB").unwrap(),
                provider: PROVIDER,
                node: contract::NodeId::parse("node-a").unwrap(),
                lease_id: contract::LeaseId(3),
                checker: BUYER,
                passed: true,
                detail: contract::FailureReason::new("matched").unwrap(),
            },
            &[],
        );
    }

    #[test]
    fn inconsistent_amounts_are_refused_not_booked() {
        assert_eq!(
            postings(&lease_ended("11.4", "0.342", "11", "0")),
            Err(PostingError::Unbalanced {
                kind: "lease_ended",
                total: -58_000,
            })
        );
        assert_eq!(
            postings(&Event::Deposited {
                account: BUYER,
                amount: Amount::from_micros(i64::MIN),
            }),
            Err(PostingError::Overflow {
                kind: "deposited",
                micros: i64::MIN,
            })
        );
    }
}
