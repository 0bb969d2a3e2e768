//! The Cosmos bridge: deposits in, periodic net settlement out with cosmrs, exactly once.
//!
//! [`keys`]: the escrow key, from a BIP-39 mnemonic on the Cosmos derivation path or a key
//! file, never from an argument, never printed. [`tx`]: real Cosmos SDK transactions (a
//! `MsgMultiSend` of payouts, signed with SIGN_MODE_DIRECT, its bytes and hash ready to be
//! stored before broadcasting) and the signature check a chain does. [`chain`]: the
//! CometBFT JSON-RPC client. [`bridge`]: the process that credits deposits, read from the
//! chain's standard events, and settles batches. [`devnet`]: a simulated Cosmos SDK chain
//! that answers as a CometBFT 0.38 node does, for tests and demos.

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
    /// The market's API answered no (with a code, or one this build does not know).
    #[error("the market API refused: {0}")]
    Refused(api_client::ClientError),
    #[error("bridge database: {0}")]
    Db(#[from] ledger::LedgerError),
    #[error("bridge database connection: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<api_client::ClientError> for BridgeError {
    /// An API that is away or busy is worth retrying; any other answer is the API's no.
    fn from(e: api_client::ClientError) -> BridgeError {
        match e {
            api_client::ClientError::Unreachable { message, .. } => BridgeError::Api(message),
            refused => BridgeError::Refused(refused),
        }
    }
}
