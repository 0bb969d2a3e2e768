//! `abci_query` over the gRPC paths clients use: accounts, balances, simulation.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmos_bridge::keys::EscrowKey;
use cosmos_bridge::tx::Account;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{
    QueryAllBalancesRequest, QueryAllBalancesResponse, QueryBalanceRequest, QueryBalanceResponse,
};
use cosmrs::proto::cosmos::tx::v1beta1::{SimulateRequest, SimulateResponse};
use cosmrs::proto::prost::Message;
use serde_json::{json, Value};

use super::{call, check, get, serving};
use crate::{pay, FEES, MNEMONIC};

fn abci(url: &str, path: &str, data: Vec<u8>) -> Value {
    let result = call(
        url,
        "abci_query",
        json!({"path": path, "data": hex::encode(data), "prove": false}),
    );
    check(
        &result,
        &json!({"response": {
            "code": "<u32>", "log": "<string>", "info": "<string>", "index": "0", "key": null,
            "value": result["response"]["value"].clone(), "proofOps": null, "height": "<int64>",
            "codespace": "<string>",
        }}),
        path,
    );
    result["response"].clone()
}

fn value<M: Message + Default>(response: &Value) -> M {
    assert_eq!(response["code"], 0, "{response}");
    M::decode(
        BASE64
            .decode(response["value"].as_str().unwrap())
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

#[test]
fn abci_queries_answer_the_grpc_paths_clients_use() {
    let (server, url, _) = serving();
    let (escrow, stranger) = (
        EscrowKey::from_mnemonic(MNEMONIC, "", "cosmos").unwrap(),
        EscrowKey::from_mnemonic(MNEMONIC, "stranger", "cosmos").unwrap(),
    );
    let account = |address: String| {
        abci(
            &url,
            "/cosmos.auth.v1beta1.Query/Account",
            QueryAccountRequest { address }.encode_to_vec(),
        )
    };
    let found: QueryAccountResponse = value(&account(escrow.address().to_string()));
    let any = found.account.unwrap();
    assert_eq!(any.type_url, "/cosmos.auth.v1beta1.BaseAccount");
    let base = BaseAccount::decode(any.value.as_slice()).unwrap();
    assert_eq!((base.account_number, base.sequence), (0, 2));
    assert_eq!(
        base.pub_key.unwrap().type_url,
        "/cosmos.crypto.secp256k1.PubKey"
    );
    let missing = account(stranger.address().to_string());
    assert_eq!(
        (&missing["code"], &missing["codespace"]),
        (&json!(22), &json!("sdk"))
    );
    assert!(
        missing["log"]
            .as_str()
            .unwrap()
            .contains("rpc error: code = NotFound"),
        "{missing}"
    );

    let balance: QueryBalanceResponse = value(&abci(
        &url,
        "/cosmos.bank.v1beta1.Query/Balance",
        QueryBalanceRequest {
            address: escrow.address().to_string(),
            denom: "uusdc".into(),
        }
        .encode_to_vec(),
    ));
    let left = server.with(|net| net.balance(escrow.address().as_ref()));
    assert_eq!(balance.balance.unwrap().amount, left.to_string());
    let all: QueryAllBalancesResponse = value(&abci(
        &url,
        "/cosmos.bank.v1beta1.Query/AllBalances",
        QueryAllBalancesRequest {
            address: escrow.address().to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    assert_eq!(all.balances.len(), 1);
    assert_eq!(
        (
            all.balances[0].denom.as_str(),
            all.balances[0].amount.clone()
        ),
        ("uusdc", left.to_string())
    );
    let none: QueryAllBalancesResponse = value(&abci(
        &url,
        "/cosmos.bank.v1beta1.Query/AllBalances",
        QueryAllBalancesRequest {
            address: stranger.address().to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    assert!(none.balances.is_empty());

    let next = pay(
        &escrow,
        &stranger,
        "1",
        FEES,
        Account {
            number: 0,
            sequence: 2,
        },
    );
    let simulated: SimulateResponse = value(&abci(
        &url,
        "/cosmos.tx.v1beta1.Service/Simulate",
        SimulateRequest {
            tx_bytes: next,
            ..Default::default()
        }
        .encode_to_vec(),
    ));
    let gas = simulated.gas_info.unwrap();
    assert!(gas.gas_used > 0 && gas.gas_used < gas.gas_wanted, "{gas:?}");
    assert!(simulated
        .result
        .unwrap()
        .events
        .iter()
        .any(|e| e.r#type == "transfer"));
    let stale = abci(
        &url,
        "/cosmos.tx.v1beta1.Service/Simulate",
        SimulateRequest {
            tx_bytes: pay(
                &escrow,
                &stranger,
                "1",
                FEES,
                Account {
                    number: 0,
                    sequence: 0,
                },
            ),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert_eq!(stale["code"], 32, "{stale}");
    assert_eq!(
        abci(&url, "/cosmos.staking.v1beta1.Query/Params", Vec::new())["code"],
        6
    );
    // The URI form: a quoted path and hex data.
    let data = QueryBalanceRequest {
        address: escrow.address().to_string(),
        denom: "uusdc".into(),
    }
    .encode_to_vec();
    let (code, response) = get(
        &url,
        &format!(
            "abci_query?path=%22/cosmos.bank.v1beta1.Query/Balance%22&data=0x{}",
            hex::encode(data)
        ),
    );
    assert_eq!(code, 200);
    let by_get: QueryBalanceResponse = value(&response["result"]["response"]);
    assert_eq!(by_get.balance.unwrap().amount, left.to_string());
}
