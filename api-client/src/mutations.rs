//! Changes. Each struct is one mutation document; its `…Variables` are its arguments.
//! Build one with [`crate::MutationBuilder`].

// The `QueryVariables` derive adds a `…Fields` type without `Debug` beside each struct.
#![allow(missing_debug_implementations)]

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::types::{MarketConfigInput, OrderStatus, PlaceOrderInput, Role, SettlementBatch};
use crate::{schema, Id, U64};

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct PlaceOrderVariables {
    pub input: PlaceOrderInput,
}

/// Places a bid (trader) or an ask (provider): the engine's answer with its fills.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "PlaceOrderVariables")]
pub struct PlaceOrder {
    #[arguments(input: $input)]
    pub place_order: OrderResult,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct OrderResult {
    pub order_id: U64,
    pub client_order_id: String,
    pub status: OrderStatus,
    pub remaining: U64,
    pub fills: Vec<Fill>,
    /// Why the rest was cancelled (`immediate_remainder` for IOC, `self_trade`, ...).
    pub cancel_reason: Option<String>,
    /// The answer to an earlier request with the same client order id.
    pub replayed: bool,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct Fill {
    pub lease_id: U64,
    pub price: Decimal,
    pub gpus: U64,
    pub hours: U64,
    pub cost: Decimal,
    pub counter_order_id: U64,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct CancelOrderVariables {
    pub order_id: Id,
}

#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "CancelOrderVariables")]
pub struct CancelOrder {
    #[arguments(orderId: $order_id)]
    pub cancel_order: CancelResult,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct CancelResult {
    pub order_id: U64,
    pub remaining: U64,
    pub released: Decimal,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct AmendOrderVariables {
    pub order_id: Id,
    /// The order's whole quantity, filled GPUs included; unchanged when `None`.
    pub gpus: Option<U64>,
}

/// Changes a resting order's quantity (its price stays: no Rust caller reprices yet).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "AmendOrderVariables")]
pub struct AmendOrder {
    #[arguments(orderId: $order_id, gpus: $gpus)]
    pub amend_order: AmendResult,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct AmendResult {
    pub order_id: U64,
    pub price: Decimal,
    pub remaining: U64,
    pub priority_kept: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct EndLeaseVariables {
    pub lease_id: Id,
}

/// Stops a lease the caller bought or provided; nobody states hours. The buyer is charged
/// to now; the provider stopping it is a provider failure, charged to the last heartbeat
/// that showed it healthy.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "EndLeaseVariables")]
pub struct EndLease {
    #[arguments(leaseId: $lease_id)]
    pub end_lease: LeaseEndResult,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct AdminEndLeaseVariables {
    pub lease_id: Id,
    /// Why the operator ends it (shown as the lease's `closeDetail`).
    pub reason: String,
}

/// Ends a lease as the operator (admin), charged to now.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "AdminEndLeaseVariables")]
pub struct AdminEndLease {
    #[arguments(leaseId: $lease_id, reason: $reason)]
    pub admin_end_lease: LeaseEndResult,
}

/// How a lease ended, as the engine charged it.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct LeaseEndResult {
    pub lease_id: U64,
    /// `buyer_stopped`, `provider_stopped`, `operator`, ...
    pub cause: String,
    pub ended_at: DateTime<Utc>,
    pub charged_until: DateTime<Utc>,
    pub charged_ms: U64,
    pub hours_used: Decimal,
    pub charged: Decimal,
    pub refunded: Decimal,
    pub provider_earned: Decimal,
    /// The bid the engine placed for the unused hours, after a provider failure of a bid
    /// placed with `rebid_on_failure`.
    pub rebid_order_id: Option<U64>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct ConfigureMarketVariables {
    pub market: String,
    pub config: MarketConfigInput,
}

/// Sets a market's parameters (admin).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "ConfigureMarketVariables")]
pub struct ConfigureMarket {
    #[arguments(market: $market, config: $config)]
    pub configure_market: MarketConfig,
}

/// A market's parameters as the engine took them.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct MarketConfig {
    pub market: String,
    pub charge_period_seconds: U64,
    pub report_interval_ms: U64,
    pub heartbeat_timeout_ms: U64,
    pub simulated: bool,
    pub bond_per_gpu: Decimal,
    pub slash_share_bps: U64,
    pub unbonding_delay_ms: U64,
    pub report_clock_window_ms: U64,
    pub model_names: Vec<String>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct RegisterNodeVariables {
    pub node: String,
    /// The node's ed25519 public key in hex.
    pub public_key: String,
}

#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "RegisterNodeVariables")]
pub struct RegisterNode {
    #[arguments(node: $node, publicKey: $public_key)]
    pub register_node: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SubmitNodeReportVariables {
    /// The report's JSON exactly as signed.
    pub report: String,
    /// The ed25519 signature in hex.
    pub signature: String,
}

#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "SubmitNodeReportVariables")]
pub struct SubmitNodeReport {
    #[arguments(report: $report, signature: $signature)]
    pub submit_node_report: ReportReceipt,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct ReportReceipt {
    /// The report's sequence number was received before: nothing was applied again.
    pub duplicate: bool,
    pub lease_starts: Vec<LeaseStart>,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct LeaseStart {
    pub lease_id: U64,
    /// The engine's rejection code when it refused the start.
    pub refused: Option<String>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SubmitJobVariables {
    pub lease_id: Id,
    pub command: String,
    pub args: Vec<String>,
    /// The cid of the OCI image manifest to run from (none: the provider's base system).
    pub image: Option<String>,
    pub inputs: Vec<crate::types::JobInput>,
}

/// Gives a running lease its job (the buyer); the environment keeps the schema's default,
/// none: no Rust caller sets one yet.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "SubmitJobVariables")]
pub struct SubmitJob {
    #[arguments(leaseId: $lease_id, command: $command, args: $args, image: $image, inputs: $inputs)]
    pub submit_job: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SubmitJobLogVariables {
    pub lease_id: Id,
    pub log_tail: String,
    /// How the job ended, once it has.
    pub outcome: Option<String>,
}

#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "SubmitJobLogVariables")]
pub struct SubmitJobLog {
    #[arguments(leaseId: $lease_id, logTail: $log_tail, outcome: $outcome)]
    pub submit_job_log: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct CreateMarketVariables {
    pub market: String,
    /// A decimal price step.
    pub tick: String,
    pub fee_bps: U64,
}

/// Opens a market (admin); the answer is its id.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "CreateMarketVariables")]
pub struct CreateMarket {
    #[arguments(market: $market, tick: $tick, feeBps: $fee_bps)]
    pub create_market: String,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct AppointCheckerVariables {
    pub market: String,
    pub account: Id,
}

/// Makes an account the market's checker (admin); the answer is the market.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "AppointCheckerVariables")]
pub struct AppointChecker {
    #[arguments(market: $market, account: $account)]
    pub appoint_checker: String,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct CreateApiKeyVariables {
    pub role: Role,
    /// The account a trader's or provider's key acts as.
    pub account: Option<Id>,
    pub label: String,
}

/// Creates an API key (admin).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "CreateApiKeyVariables")]
pub struct CreateApiKey {
    #[arguments(role: $role, account: $account, label: $label)]
    pub create_api_key: NewApiKey,
}

/// A new key: `key` is in this answer only.
#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: U64,
    pub key: String,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct CreditDepositVariables {
    pub account: Id,
    /// A decimal amount.
    pub amount: String,
    /// A decimal below 2^128 or a UUID, unique per credited account: a retry with it
    /// credits once (`replayed: true`). `None` credits again on every request.
    pub idempotency_key: Option<String>,
}

/// Credits an account (admin).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "CreditDepositVariables")]
pub struct CreditDeposit {
    #[arguments(account: $account, amount: $amount, idempotencyKey: $idempotency_key)]
    pub credit_deposit: MoneyResult,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct RequestWithdrawalVariables {
    /// A decimal amount.
    pub amount: String,
    /// As [`CreditDepositVariables::idempotency_key`], in the caller's account's key space.
    pub idempotency_key: Option<String>,
}

/// Moves the caller's money to settling; the next settlement batch pays it out.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "RequestWithdrawalVariables")]
pub struct RequestWithdrawal {
    #[arguments(amount: $amount, idempotencyKey: $idempotency_key)]
    pub request_withdrawal: MoneyResult,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct MoneyResult {
    pub account: U64,
    pub amount: Decimal,
    /// The answer to an earlier request with the same idempotency key: nothing moved.
    pub replayed: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SetPayoutAddressVariables {
    /// A bech32 address with the settlement chain's prefix.
    pub address: String,
}

/// Sets where the caller's payouts go; the answer is the address.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "SetPayoutAddressVariables")]
pub struct SetPayoutAddress {
    #[arguments(address: $address)]
    pub set_payout_address: String,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct CreditChainDepositVariables {
    pub account: Id,
    /// A decimal amount.
    pub amount: String,
    pub tx_hash: String,
    pub msg_index: U64,
}

/// Credits a final chain transfer (admin: the Cosmos bridge); a repeat answers `duplicate`.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "CreditChainDepositVariables")]
pub struct CreditChainDeposit {
    #[arguments(account: $account, amount: $amount, txHash: $tx_hash, msgIndex: $msg_index)]
    pub credit_chain_deposit: ChainDepositResult,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct ChainDepositResult {
    pub account: U64,
    pub amount: Decimal,
    pub duplicate: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct OpenSettlementVariables {
    /// A decimal amount.
    pub min_payout: String,
    pub max_payouts: U64,
}

/// Opens a settlement batch (admin: the Cosmos bridge).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "OpenSettlementVariables")]
pub struct OpenSettlement {
    #[arguments(minPayout: $min_payout, maxPayouts: $max_payouts)]
    pub open_settlement: SettlementBatch,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct ConfirmSettlementVariables {
    pub batch: Id,
    pub tx_hash: String,
    pub height: U64,
}

/// The batch's transaction is included with success (admin: the Cosmos bridge).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "ConfirmSettlementVariables")]
pub struct ConfirmSettlement {
    #[arguments(batch: $batch, txHash: $tx_hash, height: $height)]
    pub confirm_settlement: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct FailSettlementVariables {
    pub batch: Id,
    pub reason: String,
}

/// The batch's transaction failed for good (admin: the Cosmos bridge).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "FailSettlementVariables")]
pub struct FailSettlement {
    #[arguments(batch: $batch, reason: $reason)]
    pub fail_settlement: bool,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct BondVariables {
    pub market: String,
    /// A positive decimal amount, at most six places.
    pub amount: String,
}

/// Posts bond from the caller's available balance in a market (a provider).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "BondVariables")]
pub struct PostBond {
    #[arguments(market: $market, amount: $amount)]
    pub post_bond: BondChange,
}

/// Withdraws free bond: available again after the market's unbonding delay (`release_at`).
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "BondVariables")]
pub struct WithdrawBond {
    #[arguments(market: $market, amount: $amount)]
    pub withdraw_bond: BondChange,
}

#[derive(cynic::QueryFragment, Debug, Clone, PartialEq)]
pub struct BondChange {
    pub market: String,
    pub amount: Decimal,
    pub release_at: Option<DateTime<Utc>>,
}

#[derive(cynic::QueryVariables, Debug, Clone)]
pub struct SubmitRenderJobVariables {
    pub input: crate::types::RenderJobInput,
}

/// Submits a render job (a buyer); the same `clientJobId` again answers the same job.
#[derive(cynic::QueryFragment, Debug)]
#[cynic(graphql_type = "Mutation", variables = "SubmitRenderJobVariables")]
pub struct SubmitRenderJob {
    #[arguments(input: $input)]
    pub submit_render_job: crate::types::RenderJob,
}
