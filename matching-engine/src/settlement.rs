//! Money in and out through the chain bridge: payout addresses, withdrawal requests, chain
//! deposits credited once, and settlement batches (one open at a time).
//!
//! A batch's amounts sit in the accounts' `settling` bucket from the moment it opens until
//! the bridge reports the transaction's fate, so nothing in flight can be spent or paid
//! twice; a failed batch puts every amount back where it came from (available).

use contract::{
    AccountId, Amount, ChainAddress, Event, FailureReason, Rejection, SettlementId,
    SettlementPayout, TxHash,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::Engine;

/// The bridge's state in the engine.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Settlement {
    pub(crate) addresses: FxHashMap<AccountId, ChainAddress>,
    /// Every (transaction, message) ever credited.
    pub(crate) deposits: FxHashSet<(TxHash, u32)>,
    pub(crate) open: Option<(SettlementId, Vec<SettlementPayout>)>,
    pub(crate) last_batch: u64,
}

/// The most payouts one batch may hold; the bridge's transaction size limit is far below.
const MAX_BATCH: u32 = 10_000;

impl Engine {
    pub(crate) fn set_payout_address(
        &mut self,
        account: AccountId,
        address: &ChainAddress,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        self.settlement.addresses.insert(account, address.clone());
        out.push(Event::PayoutAddressSet {
            account,
            address: address.clone(),
        });
        Ok(())
    }

    pub(crate) fn request_withdrawal(
        &mut self,
        account: AccountId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        if !self.settlement.addresses.contains_key(&account) {
            return Err(Rejection::NoPayoutAddress { account });
        }
        let available = self.funds.get(&account).map_or(0, |f| f.available);
        if available < amount.micros() {
            return Err(Rejection::InsufficientFunds {
                needed: amount,
                available: Amount::from_micros(available),
            });
        }
        // Creating the entry only now keeps a rejection from leaving an empty one behind.
        // The amount stays in the account (available to settling, which counts what was
        // requested), so no bucket leaves the range its total keeps.
        let funds = self.funds.entry(account).or_default();
        funds.available -= amount.micros();
        funds.settling += amount.micros();
        funds.requested += amount.micros();
        // Earnings withdrawn by request are no longer owed by a payout.
        funds.unpaid_earnings = funds.unpaid_earnings.min(funds.available);
        out.push(Event::WithdrawalRequested { account, amount });
        Ok(())
    }

    pub(crate) fn chain_deposit(
        &mut self,
        account: AccountId,
        amount: Amount,
        tx_hash: TxHash,
        msg_index: u32,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if self.settlement.deposits.contains(&(tx_hash, msg_index)) {
            return Err(Rejection::DuplicateDeposit { tx_hash, msg_index });
        }
        self.credit(account, amount)?;
        self.settlement.deposits.insert((tx_hash, msg_index));
        out.push(Event::ChainDeposited {
            account,
            amount,
            tx_hash,
            msg_index,
        });
        Ok(())
    }

    /// What a batch opened now would pay, in account order: requested withdrawals plus
    /// unpaid earnings (as far as they are still available) that reach `min_payout`.
    pub fn settlement_due(&self, min_payout: Amount, max_payouts: u32) -> Vec<SettlementPayout> {
        let mut due: Vec<SettlementPayout> = self
            .settlement
            .addresses
            .iter()
            .filter_map(|(account, address)| {
                let funds = self.funds.get(account)?;
                let earnings = funds.unpaid_earnings.min(funds.available).max(0);
                let earnings = if earnings > 0 && earnings >= min_payout.micros() {
                    earnings
                } else {
                    0
                };
                // Requested is part of settling and earnings part of available: the sum is
                // at most the account's total, which fits (the `Funds` invariant).
                let amount = funds.requested + earnings;
                (amount > 0).then(|| SettlementPayout {
                    account: *account,
                    address: address.clone(),
                    amount: Amount::from_micros(amount),
                    from_available: Amount::from_micros(earnings),
                })
            })
            .collect();
        due.sort_unstable_by_key(|p| p.account);
        due.truncate(max_payouts as usize);
        due
    }

    /// The batch waiting for its transaction, if any.
    pub fn open_settlement_batch(&self) -> Option<(SettlementId, &[SettlementPayout])> {
        self.settlement
            .open
            .as_ref()
            .map(|(id, payouts)| (*id, payouts.as_slice()))
    }

    pub(crate) fn open_settlement(
        &mut self,
        min_payout: Amount,
        max_payouts: u32,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if let Some((batch, _)) = &self.settlement.open {
            return Err(Rejection::SettlementInProgress { batch: *batch });
        }
        if max_payouts == 0 || max_payouts > MAX_BATCH {
            return Err(Rejection::BadBatchSize { max_payouts });
        }
        if min_payout.micros() < 0 {
            return Err(Rejection::NonPositiveAmount { amount: min_payout });
        }
        let payouts = self.settlement_due(min_payout, max_payouts);
        if payouts.is_empty() {
            return Err(Rejection::NothingToSettle);
        }
        for payout in &payouts {
            let funds = self
                .funds
                .get_mut(&payout.account)
                .expect("due accounts have funds");
            // Earnings are at most both available and unpaid earnings, and they move within
            // the account.
            let earnings = payout.from_available.micros();
            funds.available -= earnings;
            funds.unpaid_earnings -= earnings;
            funds.settling += earnings;
            funds.requested = 0;
        }
        self.settlement.last_batch += 1;
        let batch = SettlementId(self.settlement.last_batch);
        self.settlement.open = Some((batch, payouts.clone()));
        out.push(Event::SettlementOpened { batch, payouts });
        Ok(())
    }

    fn close_settlement(
        &mut self,
        batch: SettlementId,
    ) -> Result<Vec<SettlementPayout>, Rejection> {
        match self.settlement.open.take() {
            Some((open, payouts)) if open == batch => Ok(payouts),
            other => {
                self.settlement.open = other;
                Err(Rejection::SettlementNotOpen { batch })
            }
        }
    }

    pub(crate) fn confirm_settlement(
        &mut self,
        batch: SettlementId,
        tx_hash: TxHash,
        height: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let payouts = self.close_settlement(batch)?;
        for payout in &payouts {
            let funds = self
                .funds
                .get_mut(&payout.account)
                .expect("batch accounts have funds");
            // The batch's amount is part of settling since the batch opened.
            funds.settling -= payout.amount.micros();
        }
        out.push(Event::SettlementConfirmed {
            batch,
            tx_hash,
            height,
            payouts,
        });
        Ok(())
    }

    pub(crate) fn fail_settlement(
        &mut self,
        batch: SettlementId,
        reason: &FailureReason,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let payouts = self.close_settlement(batch)?;
        for payout in &payouts {
            let funds = self
                .funds
                .get_mut(&payout.account)
                .expect("batch accounts have funds");
            funds.settling -= payout.amount.micros();
            funds.available += payout.amount.micros();
            // Earnings that did not leave are still owed; a failed withdrawal is not retried
            // unless the account asks again. They were part of settling, so unpaid earnings
            // + settling does not grow and stays in range (the `Funds` invariant).
            funds.unpaid_earnings += payout.from_available.micros();
        }
        out.push(Event::SettlementFailed {
            batch,
            reason: reason.clone(),
            payouts,
        });
        Ok(())
    }
}
