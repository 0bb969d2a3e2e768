//! The chain client: the CometBFT 0.38 JSON-RPC calls the bridge makes, over HTTP POST.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{QueryBalanceRequest, QueryBalanceResponse};
use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::abci::{Event, EventAttribute};
use serde_json::{json, Value};

use crate::tx::Account;
use crate::BridgeError;

/// A node's JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct ChainClient {
    http: reqwest::blocking::Client,
    url: String,
}

/// What CheckTx said of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub code: u32,
    pub log: String,
}

/// A committed transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedTx {
    pub hash: String,
    pub height: u64,
    pub code: u32,
    pub log: String,
    pub bytes: Vec<u8>,
    /// What the transaction did, as the chain's modules report it.
    pub events: Vec<Event>,
}

/// The chain's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub chain_id: String,
    pub height: u64,
}

fn unreachable(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Chain(e.to_string())
}

fn number(v: &Value) -> Result<u64, BridgeError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .ok_or_else(|| unreachable(format!("expected a number, got {v}")))
}

/// A result code as CometBFT writes it (a JSON number that fits `uint32`). A missing one is
/// the node's error, never success: reading it as 0 would take a refusal for an acceptance.
fn code(v: &Value, what: &str) -> Result<u32, BridgeError> {
    v.as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| unreachable(format!("{what}: the result code is not a uint32: {v}")))
}

impl ChainClient {
    pub fn new(url: &str) -> ChainClient {
        ChainClient {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with default settings"),
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// One JSON-RPC call; `Ok(Err(data))` is the node's error answer.
    fn call(&self, method: &str, params: Value) -> Result<Result<Value, String>, BridgeError> {
        let response: Value = self
            .http
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| unreachable(format!("{method}: {e}")))?;
        Ok(match response.get("error") {
            Some(error) => Err(error["data"]
                .as_str()
                .or(error["message"].as_str())
                .unwrap_or("unknown error")
                .to_owned()),
            None => Ok(response["result"].clone()),
        })
    }

    fn result(&self, method: &str, params: Value) -> Result<Value, BridgeError> {
        self.call(method, params)?
            .map_err(|e| unreachable(format!("{method}: {e}")))
    }

    pub fn head(&self) -> Result<Head, BridgeError> {
        let status = self.result("status", json!({}))?;
        Ok(Head {
            chain_id: status["node_info"]["network"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            height: number(&status["sync_info"]["latest_block_height"])?,
        })
    }

    /// The block time of `height`.
    pub fn block_time(&self, height: u64) -> Result<chrono::DateTime<chrono::Utc>, BridgeError> {
        let block = self.result("block", json!({"height": height.to_string()}))?;
        let time = block["block"]["header"]["time"]
            .as_str()
            .unwrap_or_default();
        chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| t.to_utc())
            .map_err(|e| unreachable(format!("block {height} time {time:?}: {e}")))
    }

    /// The latest state's answer to a query (`None`: not found) and the height of that
    /// state.
    fn abci_query(&self, path: &str, data: Vec<u8>) -> Result<(Option<Vec<u8>>, u64), BridgeError> {
        let answer = self.result(
            "abci_query",
            json!({"path": path, "data": hex::encode(data), "height": "0", "prove": false}),
        )?;
        let response = &answer["response"];
        let height = number(&response["height"])?;
        match code(&response["code"], path)? {
            0 => BASE64
                .decode(response["value"].as_str().unwrap_or_default())
                .map(|v| (Some(v), height))
                .map_err(unreachable),
            // The SDK's "not found": an account the chain has never seen.
            22 => Ok((None, height)),
            code => Err(unreachable(format!(
                "{path}: code {code}: {}",
                response["log"].as_str().unwrap_or_default()
            ))),
        }
    }

    /// The account's number and sequence, or `None` for an account the chain has not seen.
    pub fn account(&self, address: &str) -> Result<Option<Account>, BridgeError> {
        let request = QueryAccountRequest {
            address: address.to_owned(),
        };
        let (Some(value), _) = self.abci_query(
            "/cosmos.auth.v1beta1.Query/Account",
            request.encode_to_vec(),
        )?
        else {
            return Ok(None);
        };
        let any = QueryAccountResponse::decode(value.as_slice())
            .map_err(unreachable)?
            .account
            .ok_or_else(|| unreachable("account query answered no account"))?;
        let base = BaseAccount::decode(any.value.as_slice()).map_err(unreachable)?;
        Ok(Some(Account {
            number: base.account_number,
            sequence: base.sequence,
        }))
    }

    /// The balance of `address` in `denom`, in base units, and the height it was read at.
    pub fn balance(&self, address: &str, denom: &str) -> Result<(u128, u64), BridgeError> {
        let request = QueryBalanceRequest {
            address: address.to_owned(),
            denom: denom.to_owned(),
        };
        let (value, height) = self.abci_query(
            "/cosmos.bank.v1beta1.Query/Balance",
            request.encode_to_vec(),
        )?;
        let Some(value) = value else {
            return Ok((0, height));
        };
        let coin = QueryBalanceResponse::decode(value.as_slice())
            .map_err(unreachable)?
            .balance
            .unwrap_or_default();
        // An empty amount is how a chain writes a balance it has never held.
        if coin.amount.is_empty() {
            return Ok((0, height));
        }
        let amount = coin
            .amount
            .parse()
            .map_err(|_| unreachable(format!("balance {:?}", coin.amount)))?;
        Ok((amount, height))
    }

    pub fn broadcast(&self, bytes: &[u8]) -> Result<Broadcast, BridgeError> {
        let answer = match self.call("broadcast_tx_sync", json!({"tx": BASE64.encode(bytes)}))? {
            Ok(answer) => answer,
            // CometBFT's mempool cache refuses bytes it has seen (waiting or committed)
            // before the application sees them: the SDK's "already known", as an error.
            Err(e) if e.contains("tx already exists in cache") => {
                return Ok(Broadcast { code: 19, log: e })
            }
            Err(e) => return Err(unreachable(format!("broadcast_tx_sync: {e}"))),
        };
        Ok(Broadcast {
            code: code(&answer["code"], "broadcast_tx_sync")?,
            log: answer["log"].as_str().unwrap_or_default().to_owned(),
        })
    }

    fn committed(v: &Value) -> Result<CommittedTx, BridgeError> {
        let result = &v["tx_result"];
        let events = result["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Event {
                r#type: e["type"].as_str().unwrap_or_default().to_owned(),
                attributes: e["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| EventAttribute {
                        key: a["key"].as_str().unwrap_or_default().to_owned(),
                        value: a["value"].as_str().unwrap_or_default().to_owned(),
                        index: a["index"].as_bool().unwrap_or(false),
                    })
                    .collect(),
            })
            .collect();
        Ok(CommittedTx {
            hash: v["hash"].as_str().unwrap_or_default().to_uppercase(),
            height: number(&v["height"])?,
            code: code(&result["code"], "tx_result")?,
            log: result["log"].as_str().unwrap_or_default().to_owned(),
            bytes: BASE64
                .decode(v["tx"].as_str().unwrap_or_default())
                .map_err(unreachable)?,
            events,
        })
    }

    /// The committed transaction with this hash (upper-case hex), or `None` when the chain
    /// has not included it.
    pub fn tx(&self, hash: &str) -> Result<Option<CommittedTx>, BridgeError> {
        let raw = hex::decode(hash).map_err(|e| BridgeError::Tx(format!("hash {hash}: {e}")))?;
        match self.call("tx", json!({"hash": BASE64.encode(raw), "prove": false}))? {
            Ok(v) => Self::committed(&v).map(Some),
            Err(e) if e.contains("not found") => Ok(None),
            Err(e) => Err(unreachable(format!("tx: {e}"))),
        }
    }

    /// Every committed transaction matching an event `query`, in chain order, over as many
    /// pages as the node makes of them.
    pub fn tx_search(&self, query: &str) -> Result<Vec<CommittedTx>, BridgeError> {
        let mut txs = Vec::new();
        let mut per_page = 100;
        let mut total = 0;
        for page in 1.. {
            let answer = self.result(
                "tx_search",
                json!({"query": query, "prove": false, "page": page.to_string(),
                       "per_page": per_page.to_string(), "order_by": "asc"}),
            )?;
            total = usize::try_from(number(&answer["total_count"])?)
                .map_err(|_| unreachable("tx_search: a total count past this machine's size"))?;
            let found = answer["txs"].as_array().map_or(&[][..], Vec::as_slice);
            // A node may make shorter pages than asked (CometBFT caps them at 100, others
            // lower). Its pages are then that long, and asking on with the longer size
            // would skip the transactions in between.
            if page == 1 && found.len() < per_page && found.len() < total {
                per_page = found.len();
            }
            for tx in found {
                txs.push(Self::committed(tx)?);
            }
            if found.is_empty() || txs.len() >= total {
                break;
            }
        }
        if txs.len() != total {
            return Err(unreachable(format!(
                "tx_search {query:?}: the node listed {} of {total} transactions",
                txs.len()
            )));
        }
        Ok(txs)
    }
}
