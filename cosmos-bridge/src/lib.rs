//! The Cosmos bridge: deposits in, periodic net settlement out with cosmrs, exactly once.
//!
//! Built so far (issue 6/7, first slice): the escrow key ([`keys`]: from a BIP-39 mnemonic on
//! the Cosmos derivation path or a key file, never from an argument, never printed) and real
//! Cosmos SDK transactions ([`tx`]: a `MsgMultiSend` of payouts, signed with SIGN_MODE_DIRECT,
//! its bytes and hash ready to be stored before broadcasting, and the verification a chain
//! does), and the devnet's state machine ([`devnet`]: a bank module that checks them as a
//! chain does and includes them in blocks). The JSON-RPC front of the devnet, the chain
//! client, deposits and settlement batches follow.

pub mod bridge;
pub mod chain;
pub mod devnet;
pub mod keys;
pub mod tx;

/// Everything that can go wrong in the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("escrow key: {0}")]
    Key(String),
    #[error(
        "amount {amount} has more than the denom's {decimals} decimal places, or is not positive"
    )]
    BadAmount {
        amount: rust_decimal::Decimal,
        decimals: u32,
    },
    #[error("address {0:?} is not a bech32 account address with the chain's prefix")]
    BadAddress(String),
    #[error("transaction: {0}")]
    Tx(String),
    #[error("signature: {0}")]
    Signature(String),
    /// Worth retrying: the node is unreachable or answered with an error.
    #[error("chain node: {0}")]
    Chain(String),
    /// Worth retrying: the market's API is unreachable or busy.
    #[error("market API: {0}")]
    Api(String),
    #[error("the market API refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("bridge database: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("bridge database connection: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("configuration: {0}")]
    Config(String),
}
