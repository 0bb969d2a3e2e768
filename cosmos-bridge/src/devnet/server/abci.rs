//! `abci_query`: the gRPC query paths Cosmos clients send through CometBFT (accounts,
//! balances, simulation), answered in protobuf with the SDK's codes, as a 0.50 chain
//! answers them. The devnet keeps only its latest state, so it answers for the latest
//! height only.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{
    QueryAllBalancesRequest, QueryAllBalancesResponse, QueryBalanceRequest, QueryBalanceResponse,
};
use cosmrs::proto::cosmos::base::abci::v1beta1::{GasInfo, Result as SimulationResult, TxMsgData};
use cosmrs::proto::cosmos::base::query::v1beta1::PageResponse;
use cosmrs::proto::cosmos::base::v1beta1::Coin;
use cosmrs::proto::cosmos::crypto::secp256k1::PubKey;
use cosmrs::proto::cosmos::tx::v1beta1::{SimulateRequest, SimulateResponse};
use cosmrs::proto::prost::Message;
use serde_json::{json, Value};

use super::rpc::{Args, RpcError};
use super::Node;
use crate::devnet::Devnet;

/// A failed query: the SDK's code, codespace and log.
type Failure = (u32, &'static str, String);

fn decode<M: Message + Default>(data: &[u8]) -> Result<M, Failure> {
    M::decode(data).map_err(|e| {
        (
            18,
            "sdk",
            format!("failed to unmarshal request: {e}: invalid request"),
        )
    })
}

/// An address of this chain, or the SDK's refusal.
fn address(net: &Devnet, text: &str) -> Result<(), Failure> {
    if text.is_empty() {
        return Err((
            18,
            "sdk",
            "rpc error: code = InvalidArgument desc = empty address string is not allowed: \
             invalid request"
                .into(),
        ));
    }
    match text.parse::<cosmrs::AccountId>() {
        Ok(id) if id.prefix() == net.prefix => Ok(()),
        _ => Err((
            7,
            "sdk",
            format!(
                "rpc error: code = InvalidArgument desc = invalid address {text}: invalid address"
            ),
        )),
    }
}

fn answer(net: &Devnet, path: &str, data: &[u8]) -> Result<Vec<u8>, Failure> {
    match path {
        "/cosmos.auth.v1beta1.Query/Account" => {
            let request: QueryAccountRequest = decode(data)?;
            address(net, &request.address)?;
            let account = net.account(&request.address).ok_or_else(|| {
                (
                    22,
                    "sdk",
                    format!(
                        "rpc error: code = NotFound desc = account {} not found: key not found",
                        request.address
                    ),
                )
            })?;
            let pub_key = account.pub_key.as_ref().map(|key| cosmrs::Any {
                type_url: cosmrs::crypto::PublicKey::SECP256K1_TYPE_URL.into(),
                value: PubKey { key: key.clone() }.encode_to_vec(),
            });
            let base = BaseAccount {
                address: request.address,
                pub_key,
                account_number: account.number,
                sequence: account.sequence,
            };
            Ok(QueryAccountResponse {
                account: Some(cosmrs::Any {
                    type_url: "/cosmos.auth.v1beta1.BaseAccount".into(),
                    value: base.encode_to_vec(),
                }),
            }
            .encode_to_vec())
        }
        "/cosmos.bank.v1beta1.Query/Balance" => {
            let request: QueryBalanceRequest = decode(data)?;
            address(net, &request.address)?;
            if request.denom.is_empty() {
                return Err((
                    18,
                    "sdk",
                    "rpc error: code = InvalidArgument desc = invalid denom: invalid request"
                        .into(),
                ));
            }
            let amount = if request.denom == net.denom {
                net.balance(&request.address)
            } else {
                0
            };
            Ok(QueryBalanceResponse {
                balance: Some(Coin {
                    denom: request.denom,
                    amount: amount.to_string(),
                }),
            }
            .encode_to_vec())
        }
        "/cosmos.bank.v1beta1.Query/AllBalances" => {
            let request: QueryAllBalancesRequest = decode(data)?;
            address(net, &request.address)?;
            let amount = net.balance(&request.address);
            let balances: Vec<Coin> = (amount > 0)
                .then(|| Coin {
                    denom: net.denom.clone(),
                    amount: amount.to_string(),
                })
                .into_iter()
                .collect();
            let count = request.pagination.is_some_and(|p| p.count_total);
            Ok(QueryAllBalancesResponse {
                pagination: Some(PageResponse {
                    next_key: Vec::new(),
                    total: if count { balances.len() as u64 } else { 0 },
                }),
                balances,
            }
            .encode_to_vec())
        }
        "/cosmos.tx.v1beta1.Service/Simulate" => {
            let request: SimulateRequest = decode(data)?;
            if request.tx_bytes.is_empty() {
                return Err((
                    18,
                    "sdk",
                    "empty txBytes is not allowed: invalid request".into(),
                ));
            }
            let simulated = net
                .simulate(&request.tx_bytes)
                .map_err(|r| (r.code, r.codespace, r.log))?;
            let msg_responses = TxMsgData::decode(simulated.data.as_slice())
                .map(|d| d.msg_responses)
                .unwrap_or_default();
            Ok(SimulateResponse {
                gas_info: Some(GasInfo {
                    gas_wanted: simulated.gas_wanted,
                    gas_used: simulated.gas_used,
                }),
                result: Some(SimulationResult {
                    log: simulated.log,
                    events: simulated.events,
                    msg_responses,
                    ..Default::default()
                }),
            }
            .encode_to_vec())
        }
        other => Err((
            6,
            "sdk",
            format!("unknown query path {other}: unknown request"),
        )),
    }
}

pub(super) fn query(args: &Args, node: &Node) -> Result<Value, RpcError> {
    let path = args.text("path").unwrap_or_default();
    let data = args.bytes("data").unwrap_or_default();
    let net = node.chain();
    let latest = net.height();
    let asked = args.int("height").unwrap_or(0);
    let outcome = if asked != 0 && asked as u64 != latest {
        Err((
            26,
            "sdk",
            format!("the devnet keeps only the latest state, at height {latest}: invalid height"),
        ))
    } else if args.flag("prove") {
        Err((
            18,
            "sdk",
            "the devnet gives no proofs: invalid request".into(),
        ))
    } else {
        answer(&net, path, data)
    };
    let (code, codespace, log, value) = match outcome {
        Ok(value) => (0, "", String::new(), json!(BASE64.encode(value))),
        Err((code, codespace, log)) => (code, codespace, log, Value::Null),
    };
    Ok(json!({"response": {
        "code": code,
        "log": log,
        "info": "",
        "index": "0",
        "key": null,
        "value": value,
        "proofOps": null,
        "height": latest.to_string(),
        "codespace": codespace,
    }}))
}
