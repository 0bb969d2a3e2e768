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
        let available = self.funds.get(&account).map_or(0, |f| f.available);
        let available = overflow(available.checked_add(amount.micros()))?;
        self.funds.entry(account).or_default().available = available;
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
