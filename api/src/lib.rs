//! The marketplace API: GraphQL on actix-web for bots, the provider dashboard and finance.
//!
//! Not built yet: issue 4/7 builds it. Until then this crate is empty on purpose.
