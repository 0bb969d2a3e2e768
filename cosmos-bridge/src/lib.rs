//! The Cosmos bridge: deposits in, periodic net settlement out with cosmrs, exactly once.
//!
//! Not built yet: issue 6/7 builds it. Until then this crate is empty on purpose.
