//! Money in and out by the admin (deposits, withdrawals), the credit that chain deposits
//! share, and the checks other handlers make before they move money.

use contract::{AccountId, Amount, Event, Rejection};

use crate::Engine;

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
}
