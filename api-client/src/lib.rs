//! The market's GraphQL API for Rust callers: every operation a Rust program sends is a
//! cynic type here, checked against `api/schema.graphql` when this crate compiles, so a
//! schema change that breaks a caller breaks its build.
//!
//! Operations live in [`queries`], [`mutations`] and [`subscriptions`] (their shared
//! fragments, inputs and enums in [`types`]); build one with cynic's [`QueryBuilder`],
//! [`MutationBuilder`] or [`SubscriptionBuilder`] and send it with a transport: [`Client`]
//! (blocking, also opens [`Subscription`]s over `graphql-transport-ws`) or [`AsyncClient`]
//! (reqwest on the caller's runtime). The transports only send: answers and refusals mean
//! the same through both, as one [`ClientError`].

mod blocking;
mod error;
pub mod mutations;
mod nonblocking;
pub mod queries;
pub mod subscriptions;
pub mod types;
mod ws;

pub use blocking::{Client, StoredBlob};
/// The API's error codes, as [`ClientError`] carries them.
pub use contract::ErrorCode;
pub use cynic::{Id, MutationBuilder, QueryBuilder, SubscriptionBuilder};
pub use error::ClientError;
pub use nonblocking::AsyncClient;
/// A blob upload's body (`Client::put_blob`): bytes, or a file streamed with its size.
pub use reqwest::blocking::Body as BlobBody;
pub use ws::Subscription;

/// The schema's types as cynic describes them (registered by `build.rs`).
// cynic generates one marker type per schema type, none of them with `Debug`.
#[allow(missing_debug_implementations)]
#[cynic::schema("market")]
mod schema {}

cynic::impl_scalar!(rust_decimal::Decimal, schema::Decimal);
cynic::impl_scalar!(chrono::DateTime<chrono::Utc>, schema::DateTime);
cynic::impl_scalar!(chrono::NaiveDate, schema::NaiveDate);

/// A GraphQL `Int` of this API: ids, accounts, event positions and counts, which the API
/// holds as unsigned 32- or 64-bit numbers. cynic reads every `Int` as an `i32`, which ids
/// and event positions outgrow, so this crate reads and writes them whole; the API checks
/// the range of what it is sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct U64(pub u64);

impl cynic::schema::IsScalar<i32> for U64 {
    type SchemaType = i32;
}

cynic::impl_coercions!(U64, i32);

impl schema::variable::Variable for U64 {
    const TYPE: cynic::variables::VariableType = cynic::variables::VariableType::Named("Int");
}
