//! The contract every crate of the market speaks: identifiers, money, the commands the
//! matching engine accepts, the events it emits and the typed rejections it answers with.
//!
//! Everything here is plain data with parse constructors: a value of one of these types is
//! valid by construction, so the engine never re-validates syntax, only state. Serialized
//! forms are a public contract (the event log and the API carry them): change them only by
//! adding a new schema version.

/// `FromStr` and `Display` for an enum from its `as_str` names (the stored and JSON form), so
/// a database row or a text field maps back to the type or fails.
macro_rules! stored_form {
    ($type:ident, $kind:literal, [$($variant:ident),*]) => {
        impl std::str::FromStr for $type {
            type Err = $crate::ParseError;
            fn from_str(s: &str) -> Result<Self, $crate::ParseError> {
                [$($type::$variant),*]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::ParseError::UnknownName {
                        kind: $kind,
                        input: s.to_owned(),
                    })
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod chain;
pub mod codec;
mod command;
mod digest;
mod error_code;
mod event;
mod explain;
mod heartbeat;
mod ids;
pub mod image;
pub mod market;
mod money;
mod rejection;
mod report;
mod status;

pub use chain::{ChainAddress, FailureReason, SettlementPayout, TxHash};
pub use command::{
    AskSpec, BidSpec, Command, Interconnect, NewOrder, OrderOptions, OrderTerms, Side, TimeInForce,
    Vendor,
};
pub use digest::{BadDigest, Digest};
pub use error_code::{ErrorCode, UnknownErrorCode};
pub use event::{CancelReason, Event, LeaseEndCause, LeaseEndReason};
pub use explain::{Exclusion, Explanation, SkippedOrder};
pub use heartbeat::{
    GpuStatus, NodeKey, NodeRef, ReportEvidence, ShortText, Signature, SignedHeartbeat,
};
pub use ids::{
    AccountId, ClientOrderId, IdempotencyKey, LeaseId, MarketId, NodeId, OrderId, ParseError,
    Region, SettlementId,
};
pub use market::{hours_of_ms, ChargePeriod, ConfigError, MarketConfig, MarketConfigFields};
pub use money::{Amount, FeeRate, Gpus, Hours, MoneyError, Price, Reputation, Timestamp};
pub use rejection::Rejection;
pub use report::{is_relative_path, GpuSample, JobOutputs, NodeReport, OutputFile, OutputManifest};
pub use status::{LeaseState, OrderStatus};
