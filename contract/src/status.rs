//! Where an order or a lease stands. One type each, shared by the engine's answers, the
//! projections (which store [`OrderStatus::as_str`] and [`LeaseState::as_str`]) and the API.

use serde::{Deserialize, Serialize};

/// An order after the events so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Resting, with GPUs still open.
    Open,
    /// Every GPU traded.
    Filled,
    /// Cancelled by its owner, expired, or the rest of an IOC, FOK or self-trade.
    Cancelled,
}

impl OrderStatus {
    /// The only rule: a cancelled order is cancelled whatever traded before; otherwise it is
    /// filled once nothing remains.
    pub fn of(remaining: u32, cancelled: bool) -> OrderStatus {
        match (cancelled, remaining) {
            (true, _) => OrderStatus::Cancelled,
            (false, 0) => OrderStatus::Filled,
            (false, _) => OrderStatus::Open,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// A lease after the events so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Traded; the provider's agent has not reported the job's start.
    Created,
    /// The provider reported the start.
    Running,
    Ended,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Created => "created",
            LeaseState::Running => "running",
            LeaseState::Ended => "ended",
        }
    }
}

stored_form!(OrderStatus, "order status", [Open, Filled, Cancelled]);
stored_form!(LeaseState, "lease state", [Created, Running, Ended]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_remaining_and_cancellation() {
        assert_eq!(OrderStatus::of(3, false), OrderStatus::Open);
        assert_eq!(OrderStatus::of(0, false), OrderStatus::Filled);
        assert_eq!(OrderStatus::of(0, true), OrderStatus::Cancelled);
        assert_eq!(OrderStatus::of(2, true), OrderStatus::Cancelled);
    }

    #[test]
    fn stored_forms_read_back() {
        for s in [
            OrderStatus::Open,
            OrderStatus::Filled,
            OrderStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse(), Ok(s));
        }
        for s in [LeaseState::Created, LeaseState::Running, LeaseState::Ended] {
            assert_eq!(s.as_str().parse(), Ok(s));
        }
        assert!("Open".parse::<OrderStatus>().is_err());
    }
}
