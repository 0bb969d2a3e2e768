//! The bank module of a Cosmos SDK 0.50 chain: `MsgSend` and `MsgMultiSend`, checked as
//! their `ValidateBasic` checks them, run at delivery and in simulations, with the SDK's
//! codes and log texts, gas, and events: per message a `message` event with `action`,
//! `sender` and `module`, then the bank's own (`coin_spent`, `coin_received`, `transfer`,
//! `message`), each with `msg_index`. Delivery keeps the ante handler's changes (fee,
//! sequence, public key) whatever the messages then do, as on a chain.

use cosmrs::bank::{MsgMultiSend, MsgSend};
use cosmrs::proto::cosmos::base::abci::v1beta1::TxMsgData;
use cosmrs::proto::prost::Message;
use cosmrs::proto::tendermint::abci::{Event, EventAttribute};
use cosmrs::tx::Msg;

use super::ante::{Ante, Mode};
use super::{Devnet, Refused, TxResult};

const GAS_PER_MESSAGE: u64 = 10_000;
/// Each input's or output's balance read and written.
const GAS_PER_TRANSFER: u64 = 8_000;

/// One bank message, decoded.
#[derive(Debug)]
pub(super) struct Send {
    type_url: String,
    response_url: &'static str,
    multi: bool,
    pub(super) from: String,
    /// The input in the chain's denom, and as the SDK prints coins.
    input: u128,
    input_text: String,
    /// Coins of other denoms, which nobody on this chain holds.
    foreign: bool,
    outputs: Vec<(String, u128, String)>,
}

/// What the messages did.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) events: Vec<Event>,
    pub(super) data: Vec<u8>,
    pub(super) gas_used: u64,
    debit: u128,
    credits: Vec<(String, u128)>,
}

/// An event with every attribute indexed, as the SDK marks them, and the index of the
/// message it belongs to, if any.
pub(super) fn event(kind: &str, attributes: &[(&str, &str)], msg_index: Option<usize>) -> Event {
    let index = msg_index.map(|i| i.to_string());
    Event {
        r#type: kind.to_owned(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(index.as_deref().map(|i| ("msg_index", i)))
            .map(|(key, value)| EventAttribute {
                key: key.to_owned(),
                value: value.to_owned(),
                index: true,
            })
            .collect(),
    }
}

/// Coins as the SDK prints them (`12uusdc,5uatom`), their amount in `denom`, and whether
/// there are others. A list whose denoms are not sorted, or repeat, is refused as the SDK's
/// `Coins.Validate` refuses it (the text, and why): that is also what makes a list's amount
/// in `denom` one coin's, never a sum that could overflow.
pub(super) fn coins(
    list: &[cosmrs::Coin],
    denom: &str,
) -> Result<(String, u128, bool), (String, String)> {
    let text = list
        .iter()
        .map(|c| format!("{}{}", c.amount, c.denom))
        .collect::<Vec<_>>()
        .join(",");
    for pair in list.windows(2) {
        let (a, b) = (pair[0].denom.as_ref(), pair[1].denom.as_ref());
        if a >= b {
            let why = if a == b {
                format!("duplicate denomination {b}")
            } else {
                format!("denomination {b} is not sorted")
            };
            return Err((text, why));
        }
    }
    let ours = list
        .iter()
        .find(|c| c.denom.as_ref() == denom)
        .map_or(0, |c| c.amount);
    let foreign = list
        .iter()
        .any(|c| c.denom.as_ref() != denom && c.amount > 0);
    Ok((text, ours, foreign))
}

impl Devnet {
    /// A message the bank module takes, checked as its `ValidateBasic` checks it.
    pub(super) fn decode_send(
        &self,
        any: &cosmrs::Any,
    ) -> Result<Send, (u32, &'static str, String)> {
        let address = |a: &cosmrs::AccountId, role: &str| {
            if a.prefix() == self.prefix {
                Ok(a.to_string())
            } else {
                Err((
                    7,
                    "sdk",
                    format!(
                        "invalid {role} address: hrp does not match bech32 prefix: expected '{}' got '{}': invalid address",
                        self.prefix,
                        a.prefix()
                    ),
                ))
            }
        };
        let positive = |list: &[cosmrs::Coin]| match coins(list, &self.denom) {
            Err((text, why)) => Err((10, "sdk", format!("{why}: {text}: invalid coins"))),
            Ok((text, ..)) if list.is_empty() || list.iter().any(|c| c.amount == 0) => {
                Err((10, "sdk", format!("{text}: invalid coins")))
            }
            Ok(coins) => Ok(coins),
        };
        if let Ok(m) = MsgSend::from_any(any) {
            let from = address(&m.from_address, "from")?;
            let to = address(&m.to_address, "to")?;
            let (text, amount, foreign) = positive(&m.amount)?;
            return Ok(Send {
                type_url: any.type_url.clone(),
                response_url: "/cosmos.bank.v1beta1.MsgSendResponse",
                multi: false,
                from,
                input: amount,
                input_text: text.clone(),
                foreign,
                outputs: vec![(to, amount, text)],
            });
        }
        let Ok(m) = MsgMultiSend::from_any(any) else {
            return Err((
                2,
                "sdk",
                format!(
                    "unable to resolve type URL {}: tx parse error",
                    any.type_url
                ),
            ));
        };
        let input = match m.inputs.as_slice() {
            [] => return Err((2, "bank", "no inputs to send transaction".into())),
            [input] => input,
            _ => return Err((9, "bank", "multiple senders not allowed".into())),
        };
        if m.outputs.is_empty() {
            return Err((3, "bank", "no outputs to send transaction".into()));
        }
        let from = address(&input.address, "input")?;
        let (input_text, amount, foreign) = positive(&input.coins)?;
        let mismatch = || (4, "bank", "sum inputs != sum outputs".to_owned());
        let mut outputs = Vec::with_capacity(m.outputs.len());
        let mut sums = std::collections::BTreeMap::<String, u128>::new();
        for output in &m.outputs {
            let (text, value, _) = positive(&output.coins)?;
            for c in &output.coins {
                // Outputs past u128 can never equal the one input, which fits one.
                let sum = sums.entry(c.denom.to_string()).or_default();
                *sum = sum.checked_add(c.amount).ok_or_else(mismatch)?;
            }
            outputs.push((address(&output.address, "output")?, value, text));
        }
        // The input's coins are valid, so each denom is there once.
        let inputs: std::collections::BTreeMap<String, u128> = input
            .coins
            .iter()
            .map(|c| (c.denom.to_string(), c.amount))
            .collect();
        if inputs != sums {
            return Err(mismatch());
        }
        Ok(Send {
            type_url: any.type_url.clone(),
            response_url: "/cosmos.bank.v1beta1.MsgMultiSendResponse",
            multi: true,
            from,
            input: amount,
            input_text,
            foreign,
            outputs,
        })
    }

    /// Runs the messages against `available` (the signer's balance once the fee is paid),
    /// changing nothing.
    pub(super) fn execute(&self, ante: &Ante, available: u128, limit: u64) -> Result<Run, Refused> {
        let mut available = available;
        let mut gas = ante.gas_used;
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ante.sends.len());
        let (mut debit, mut credits) = (0u128, Vec::new());
        let refuse = |code, log, gas_used| Refused {
            code,
            codespace: "sdk",
            log,
            gas_wanted: ante.gas_wanted,
            gas_used,
        };
        for (i, send) in ante.sends.iter().enumerate() {
            // Gas counts saturate: a count at the end of the numbers is over any limit.
            let transfers =
                u64::try_from(send.outputs.len()).map_or(u64::MAX, |n| n.saturating_add(1));
            gas = gas.saturating_add(
                GAS_PER_MESSAGE.saturating_add(GAS_PER_TRANSFER.saturating_mul(transfers)),
            );
            if gas > limit {
                return Err(refuse(
                    11,
                    format!(
                        "out of gas in location: WriteFlat; gasWanted: {}, gasUsed: {gas}: out of gas",
                        ante.gas_wanted
                    ),
                    gas,
                ));
            }
            if send.foreign || send.input > available {
                return Err(refuse(
                    5,
                    format!(
                        "failed to execute message; message index: {i}: spendable balance {available}{} is smaller than {}: insufficient funds",
                        self.denom, send.input_text
                    ),
                    gas,
                ));
            }
            // A message spends at most what is available, and its outputs to the signer give
            // back at most what it spent, so none of these can overflow: the debits of all
            // messages never pass the signer's balance.
            available -= send.input;
            debit += send.input;
            let at = Some(i);
            events.push(event(
                "message",
                &[
                    ("action", &send.type_url),
                    ("sender", &send.from),
                    ("module", "bank"),
                ],
                at,
            ));
            events.push(event(
                "coin_spent",
                &[("spender", &send.from), ("amount", &send.input_text)],
                at,
            ));
            if send.multi {
                events.push(event("message", &[("sender", &send.from)], at));
            }
            for (to, amount, text) in &send.outputs {
                if *to == ante.signer {
                    available += amount;
                }
                credits.push((to.clone(), *amount));
                events.push(event(
                    "coin_received",
                    &[("receiver", to), ("amount", text)],
                    at,
                ));
                let mut transfer = vec![("recipient", to.as_str())];
                // The SDK names the sender in a send's transfer event, not a multi-send's.
                if !send.multi {
                    transfer.push(("sender", &send.from));
                }
                transfer.push(("amount", text));
                events.push(event("transfer", &transfer, at));
            }
            if !send.multi {
                events.push(event("message", &[("sender", &send.from)], at));
            }
            responses.push(cosmrs::Any {
                type_url: send.response_url.to_owned(),
                value: Vec::new(),
            });
        }
        let data = TxMsgData {
            msg_responses: responses,
            ..Default::default()
        }
        .encode_to_vec();
        Ok(Run {
            events,
            data,
            gas_used: gas,
            debit,
            credits,
        })
    }

    /// Delivers a transaction in block `height`: the ante handler's changes (fee, sequence,
    /// public key) stand once it passed, whatever the messages then do, as on a chain.
    pub(super) fn deliver(&mut self, bytes: &[u8], height: u64, index: u32) -> TxResult {
        let failed = |r: Refused, events| TxResult {
            height,
            index,
            code: r.code,
            codespace: r.codespace,
            log: r.log,
            data: Vec::new(),
            gas_wanted: r.gas_wanted,
            gas_used: r.gas_used,
            events,
        };
        let ante = match self.ante(bytes, Mode::Deliver, height) {
            Ok(ante) => ante,
            Err(r) => return failed(r, Vec::new()),
        };
        let account = self
            .accounts
            .get_mut(&ante.signer)
            .expect("the ante handler found the signer");
        // The ante handler found the fee within the balance; a sequence never gets near
        // the end of a u64 (one per transaction); the fees collected are within the supply.
        account.sequence += 1;
        account.balance -= ante.fee;
        account.pub_key = Some(ante.pub_key.clone());
        let available = account.balance;
        self.fees_collected += ante.fee;
        match self.execute(&ante, available, ante.gas_wanted) {
            Ok(run) => {
                if let Some(a) = self.accounts.get_mut(&ante.signer) {
                    a.balance -= run.debit;
                }
                for (to, amount) in &run.credits {
                    self.credit(to, *amount);
                }
                let mut events = ante.events;
                events.extend(run.events);
                TxResult {
                    height,
                    index,
                    code: 0,
                    codespace: "",
                    log: String::new(),
                    data: run.data,
                    gas_wanted: ante.gas_wanted,
                    gas_used: run.gas_used,
                    events,
                }
            }
            Err(r) => failed(r, ante.events),
        }
    }
}
