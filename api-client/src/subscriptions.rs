//! Streams. Each struct is one subscription document; build one with
//! [`crate::SubscriptionBuilder`] and open it with [`crate::Client::subscribe`].

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::{schema, U64};

/// Changes of the caller's orders: accepted, filled, amended, cancelled, re-bid.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Subscription")]
pub struct MyOrderUpdates {
    pub my_order_updates: OrderUpdate,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct OrderUpdate {
    pub order_id: U64,
    /// `accepted`, `filled`, `amended`, `cancelled`, or `rebid` (the engine placed this
    /// order for the unused hours of the failed lease `lease_id`).
    pub change: String,
    /// GPUs still open after the change.
    pub remaining: U64,
    pub price: Option<Decimal>,
    pub lease_id: Option<U64>,
    /// The failed lease this order re-bids.
    pub rebid_of: Option<U64>,
    pub at: DateTime<Utc>,
}
