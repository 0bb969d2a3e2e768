//! The contract every crate of the market speaks: identifiers, money, the commands the
//! matching engine accepts, the events it emits and the typed rejections it answers with.
//!
//! Everything here is plain data with parse constructors: a value of one of these types is
//! valid by construction, so the engine never re-validates syntax, only state. Serialized
//! forms are a public contract (the event log and the API carry them): change them only by
//! adding a new schema version.

mod chain;
pub mod codec;
mod command;
mod event;
mod explain;
mod ids;
mod money;
mod rejection;

pub use chain::{ChainAddress, FailureReason, SettlementPayout, TxHash};
pub use command::{
    AskSpec, BidSpec, Command, Interconnect, NewOrder, OrderTerms, Side, TimeInForce, Vendor,
};
pub use event::{CancelReason, Event, LeaseEndReason};
pub use explain::{Exclusion, Explanation, SkippedOrder};
pub use ids::{
    AccountId, ClientOrderId, LeaseId, MarketId, NodeId, OrderId, ParseError, Region, SettlementId,
};
pub use money::{Amount, FeeRate, Gpus, Hours, MoneyError, Price, Reputation, Timestamp};
pub use rejection::Rejection;
