//! Every error code the market reports, in one table: the API's own codes and the engine's
//! rejections. A code is part of the wire contract (GraphQL `extensions.code`, REST bodies):
//! clients match on [`ErrorCode`], never on the string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines [`ErrorCode`] with its string, HTTP status and meaning from one table, so a code
/// cannot exist without a status or a description.
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $meaning:literal;)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it travels, e.g. `PRICE_OFF_TICK`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status a response carrying this code has.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// When it happens, for the API's documentation.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    // The API's own codes.
    Validation = "VALIDATION", 400, "An argument is malformed or out of range; nothing changed.";
    Unauthenticated = "UNAUTHENTICATED", 401, "No API key, or a key that is unknown, malformed or revoked.";
    Forbidden = "FORBIDDEN", 403, "The key's role may not do this, or the object is another account's.";
    NotFound = "NOT_FOUND", 404, "No such object.";
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", 413, "The request body is larger than the limit.";
    QuotaExceeded = "QUOTA_EXCEEDED", 413, "The upload would take the account's stored blobs over its quota; nothing stored.";
    DigestMismatch = "DIGEST_MISMATCH", 422, "The uploaded body's SHA-256 digest is not the one claimed; nothing stored.";
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE", 415, "A GraphQL request must be sent as application/json.";
    RequestTimeout = "REQUEST_TIMEOUT", 408, "The request's body did not arrive in time.";
    QueryTooComplex = "QUERY_TOO_COMPLEX", 400, "The query is deeper or more complex than the limits.";
    RateLimited = "RATE_LIMITED", 429, "The key sent more requests than its rate allows; retry later.";
    EngineTimeout = "ENGINE_TIMEOUT", 504, "The command is in the log but the engine did not answer in time; it will still be applied: retry with the same idempotency key to learn the result.";
    BudgetTooLow = "BUDGET_TOO_LOW", 422, "The render job's budget does not cover its frames (each checked share included) at its limit price and time per frame; nothing was bought.";
    Unavailable = "UNAVAILABLE", 503, "A dependency (Postgres, the event log) is not reachable; retry.";
    Internal = "INTERNAL", 500, "A bug; the server's log has the details.";
    // The engine's rejections (`Rejection::code`): the command changed nothing.
    UnknownMarket = "UNKNOWN_MARKET", 404, "No market of that name.";
    MarketExists = "MARKET_EXISTS", 409, "A market of that name exists already.";
    PriceOffTick = "PRICE_OFF_TICK", 422, "The price is not a multiple of the market's tick.";
    NonPositiveAmount = "NON_POSITIVE_AMOUNT", 422, "An amount must be positive.";
    InsufficientFunds = "INSUFFICIENT_FUNDS", 402, "The account's available balance does not cover the hold or the withdrawal.";
    AmountOverflow = "AMOUNT_OVERFLOW", 422, "The amount does not fit the engine's range.";
    ReservedAccount = "RESERVED_ACCOUNT", 403, "The market's own accounts cannot do this.";
    DuplicateClientOrderId = "DUPLICATE_CLIENT_ORDER_ID", 409, "The account used this client order id before.";
    UnknownOrder = "UNKNOWN_ORDER", 404, "No resting order with that id (filled, cancelled or never placed).";
    NotOwner = "NOT_OWNER", 403, "The order belongs to another account.";
    Expired = "EXPIRED", 422, "The order's time in force ended before it arrived.";
    AvailabilityTooShort = "AVAILABILITY_TOO_SHORT", 422, "The node is available for less than one hour.";
    PostOnlyWouldTrade = "POST_ONLY_WOULD_TRADE", 422, "A post-only order would trade on arrival.";
    FillOrKillUnfilled = "FILL_OR_KILL_UNFILLED", 422, "A fill-or-kill order cannot be filled completely now.";
    MinFillAboveQuantity = "MIN_FILL_ABOVE_QUANTITY", 422, "The minimum fill is larger than the order.";
    NothingToAmend = "NOTHING_TO_AMEND", 422, "The amend changes neither price nor quantity.";
    AmendBelowFilled = "AMEND_BELOW_FILLED", 422, "An amend cannot go to or below what is filled.";
    TooManyRegions = "TOO_MANY_REGIONS", 422, "The shard knows as many regions as it can match on.";
    UnknownLease = "UNKNOWN_LEASE", 404, "No running lease with that id.";
    NotLeaseParty = "NOT_LEASE_PARTY", 403, "The caller is neither the lease's buyer nor its provider.";
    NotLeaseProvider = "NOT_LEASE_PROVIDER", 403, "The caller is not the lease's provider.";
    LeaseAlreadyStarted = "LEASE_ALREADY_STARTED", 409, "The lease's start was recorded before.";
    BadHoursUsed = "BAD_HOURS_USED", 422, "Hours used must lie between 0 and the lease's hours.";
    NoPayoutAddress = "NO_PAYOUT_ADDRESS", 422, "The account has no payout address.";
    DuplicateDeposit = "DUPLICATE_DEPOSIT", 409, "That chain deposit was credited before.";
    SettlementInProgress = "SETTLEMENT_IN_PROGRESS", 409, "A settlement batch is open; one settles at a time.";
    NothingToSettle = "NOTHING_TO_SETTLE", 422, "No withdrawal is requested and no earnings reach the minimum payout.";
    SettlementNotOpen = "SETTLEMENT_NOT_OPEN", 409, "That settlement batch is not open.";
    BadBatchSize = "BAD_BATCH_SIZE", 422, "A settlement batch holds 1 to 10,000 payouts.";
    ClockWentBackwards = "CLOCK_WENT_BACKWARDS", 409, "A clock tick was stamped before the engine's clock; nothing changed.";
    LeaseEnded = "LEASE_ENDED", 409, "The lease has ended.";
    LeaseMetered = "LEASE_METERED", 422, "The lease is metered: stop it; hours are never stated.";
    NodeSilent = "NODE_SILENT", 409, "The node's heartbeats stopped; it cannot be matched until it reports again.";
    ReservedClientOrderId = "RESERVED_CLIENT_ORDER_ID", 422, "Client order ids whose upper 64 bits are all ones are the engine's own.";
    TooManyExcludedNodes = "TOO_MANY_EXCLUDED_NODES", 422, "A bid excludes at most 32 nodes.";
    BidOptionOnAsk = "BID_OPTION_ON_ASK", 422, "Re-bidding and excluded nodes are options of bids.";
    AlreadyApplied = "ALREADY_APPLIED", 409, "A request with this idempotency key and the same content was applied before; nothing changed (the API answers it as replayed).";
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", 422, "The idempotency key was used for a different request.";
    StaleReport = "STALE_REPORT", 409, "A node report whose sequence number is not above the node's last one; nothing changed.";
    UnknownNode = "UNKNOWN_NODE", 404, "No node of that name is registered for this provider; register it first.";
    SimulatedReport = "SIMULATED_REPORT", 422, "A report from simulated GPUs, to a market not created as simulated; nothing changed.";
    ReportClockSkew = "REPORT_CLOCK_SKEW", 422, "The report's own time lies outside the market's window around its clock (a wrong clock, or a replayed report); nothing changed.";
    NodeNotReporting = "NODE_NOT_REPORTING", 409, "The ask's node has sent no signed report yet: register it and let its agent report first.";
    SpecMismatch = "SPEC_MISMATCH", 422, "The node's latest signed report does not back the ask (model not of the market's class, memory below the ask's VRAM, another vendor, or too few free GPUs); the message names the reported value.";
    GpuAlreadyRegistered = "GPU_ALREADY_REGISTERED", 409, "A GPU UUID in the report is already another node's; both nodes are flagged and nothing changed.";
    InsufficientBond = "INSUFFICIENT_BOND", 422, "Not enough free bond in the market for the ask's GPUs (post bond first), or for the withdrawal.";
    TooManyUnbondings = "TOO_MANY_UNBONDINGS", 422, "At most 32 withdrawals of bond wait at once per provider and market; wait for one to be released.";
    NotTheChecker = "NOT_THE_CHECKER", 403, "Only the market's appointed checker account places checks and records their results.";
    PaymentNotHeld = "PAYMENT_NOT_HELD", 409, "The lease still runs: only a lease its buyer stopped holding the payment has a payment to release.";
}

impl ErrorCode {
    /// Worth retrying unchanged later: the request may not have been carried out, and the
    /// fault is not in it.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::RateLimited
                | ErrorCode::EngineTimeout
                | ErrorCode::Internal
        )
    }
}

impl ErrorCode {
    /// The engine's answer to a command it refused: the command is in the log (and changed
    /// nothing). Every other code is the API's own, for a request that appended nothing.
    pub fn is_rejection(self) -> bool {
        !matches!(
            self,
            ErrorCode::Validation
                | ErrorCode::Unauthenticated
                | ErrorCode::Forbidden
                | ErrorCode::NotFound
                | ErrorCode::UnknownNode
                | ErrorCode::PayloadTooLarge
                | ErrorCode::QuotaExceeded
                | ErrorCode::DigestMismatch
                | ErrorCode::UnsupportedMediaType
                | ErrorCode::RequestTimeout
                | ErrorCode::QueryTooComplex
                | ErrorCode::RateLimited
                | ErrorCode::EngineTimeout
                | ErrorCode::Unavailable
                | ErrorCode::Internal
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code this build does not know, e.g. from a newer server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;
    fn from_str(s: &str) -> Result<Self, UnknownErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_is_unique() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
            assert!((400..600).contains(&code.status()), "{code}");
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!("PRICE_OFF_TIK".parse::<ErrorCode>().is_err());
    }
}
