//! Money in and out by the admin (deposits, withdrawals), the credit that chain deposits
//! share, the checks other handlers make before they move money, and idempotency keys for
//! deposits and withdrawal requests, and storage charges.

use contract::{AccountId, Amount, Event, IdempotencyKey, Rejection, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Engine;

/// What an idempotency key of an account was used for: its content, to tell a retry (the
/// same) from a mistake (something else under the same key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    Deposit(Amount),
    WithdrawalRequest(Amount),
}

pub(crate) fn overflow<T>(value: Option<T>) -> Result<T, Rejection> {
    value.ok_or(Rejection::AmountOverflow)
}

impl Engine {
    pub(crate) fn deposit(
        &mut self,
        account: AccountId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        self.credit(account, amount)?;
        out.push(Event::Deposited { account, amount });
        Ok(())
    }

    /// Adds money that entered the market (a deposit, from the admin or the chain) to the
    /// account's available balance. The account's entry is made only once nothing can fail,
    /// so a refusal leaves no empty entry behind.
    pub(crate) fn credit(&mut self, account: AccountId, amount: Amount) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        if account == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account });
        }
        // The whole account must have room, not only its available balance: money later
        // moves between its buckets unchecked (a cancelled hold back to available).
        let funds = self.funds.get(&account).copied().unwrap_or_default();
        funds.can_receive(amount.micros())?;
        self.funds.entry(account).or_default().available += amount.micros();
        Ok(())
    }

    pub(crate) fn withdraw(
        &mut self,
        account: AccountId,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        let available = self.funds.get(&account).map_or(0, |f| f.available);
        if available < amount.micros() {
            return Err(Rejection::InsufficientFunds {
                needed: amount,
                available: Amount::from_micros(available),
            });
        }
        if let Some(funds) = self.funds.get_mut(&account) {
            // At most what is available, both non-negative.
            funds.available -= amount.micros();
        }
        out.push(Event::Withdrawn { account, amount });
        Ok(())
    }

    /// Refuses a second use of `key` by `account`: a retry of the same request is
    /// `AlreadyApplied`, anything else `IdempotencyKeyReused`.
    fn check_key(
        &self,
        account: AccountId,
        key: IdempotencyKey,
        request: Applied,
    ) -> Result<(), Rejection> {
        match self.applied.get(&(account, key)) {
            None => Ok(()),
            Some(used) if *used == request => Err(Rejection::AlreadyApplied { key }),
            Some(_) => Err(Rejection::IdempotencyKeyReused { key }),
        }
    }

    pub(crate) fn deposit_once(
        &mut self,
        account: AccountId,
        amount: Amount,
        key: IdempotencyKey,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let request = Applied::Deposit(amount);
        self.check_key(account, key, request)?;
        self.deposit(account, amount, out)?;
        self.applied.insert((account, key), request);
        Ok(())
    }

    pub(crate) fn request_withdrawal_once(
        &mut self,
        account: AccountId,
        amount: Amount,
        key: IdempotencyKey,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        let request = Applied::WithdrawalRequest(amount);
        self.check_key(account, key, request)?;
        self.request_withdrawal(account, amount, out)?;
        self.applied.insert((account, key), request);
        Ok(())
    }

    fn available(&self, account: AccountId) -> i64 {
        self.funds.get(&account).map_or(0, |f| f.available)
    }

    pub(crate) fn ensure_funds(&self, account: AccountId, needed: i64) -> Result<(), Rejection> {
        let available = self.available(account);
        if needed > available {
            return Err(Rejection::InsufficientFunds {
                needed: Amount::from_micros(needed),
                available: Amount::from_micros(available),
            });
        }
        Ok(())
    }

    /// Takes an hour's storage charge from the account's available balance to the market's
    /// fees: as much of it as is available (the rest is stated as unpaid, never owed into a
    /// negative balance), once per account and hour, hours in order.
    pub(crate) fn charge_storage(
        &mut self,
        account: AccountId,
        hour: Timestamp,
        bytes: u64,
        amount: Amount,
        out: &mut Vec<Event>,
    ) -> Result<(), Rejection> {
        const HOUR_MS: i64 = 3_600_000;
        if hour.0 < 0 || hour.0 % HOUR_MS != 0 || hour.0.saturating_add(HOUR_MS) > self.now {
            return Err(Rejection::BadStorageHour {
                hour,
                now: Timestamp(self.now),
            });
        }
        if !amount.is_positive() {
            return Err(Rejection::NonPositiveAmount { amount });
        }
        if account == AccountId::MARKET {
            return Err(Rejection::ReservedAccount { account });
        }
        // The ledger keeps byte counts as `i64`.
        if i64::try_from(bytes).is_err() {
            return Err(Rejection::AmountOverflow);
        }
        if let Some(&last) = self.storage_charged.get(&account) {
            if hour.0 <= last {
                return Err(Rejection::StorageCharged {
                    account,
                    hour,
                    last: Timestamp(last),
                });
            }
        }
        let paid = amount.micros().min(self.available(account).max(0));
        let market = self
            .funds
            .get(&AccountId::MARKET)
            .copied()
            .unwrap_or_default();
        market.can_receive(paid)?;
        if paid > 0 {
            self.funds.entry(account).or_default().available -= paid;
            self.funds.entry(AccountId::MARKET).or_default().available += paid;
        }
        self.storage_charged.insert(account, hour.0);
        out.push(Event::StorageCharged {
            account,
            hour,
            bytes,
            amount: Amount::from_micros(paid),
            unpaid: Amount::from_micros(amount.micros() - paid),
        });
        Ok(())
    }
}
