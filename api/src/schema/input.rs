//! Arguments into the contract's types: every syntax check happens here, so a command that
//! reaches the engine is well formed and the engine checks only state.

use async_graphql::{InputObject, ID};
use chrono::{DateTime, Utc};
use contract::{
    AccountId, AskSpec, BidSpec, ClientOrderId, Gpus, Hours, IdempotencyKey, Interconnect, LeaseId,
    NewOrder, NodeId, NodeRef, OrderId, OrderOptions, OrderTerms, Price, Region, Reputation,
    SettlementId, TimeInForce as EngineTif, Timestamp, Vendor,
};

use crate::auth::{Principal, Role};
use crate::errors::ApiError;
use crate::schema::parse_market;
use crate::schema::types::order::TimeInForce;

#[derive(Debug, InputObject)]
pub struct BidInput {
    /// Lease length in whole hours.
    pub hours: u32,
    #[graphql(default)]
    pub min_vram_gb: u32,
    /// Allowed regions; empty means any.
    #[graphql(default)]
    pub regions: Vec<String>,
    /// Allowed interconnects (`pcie`, `nvlink`, `nvswitch`, `infinity_fabric`); empty: any.
    #[graphql(default)]
    pub interconnects: Vec<String>,
    /// `nvidia` or `amd`; absent: either.
    pub vendor: Option<String>,
    #[graphql(default)]
    pub min_reputation: u32,
    #[graphql(default)]
    pub single_node: bool,
    #[graphql(default)]
    pub all_or_none: bool,
    pub min_fill: Option<u32>,
    /// When a lease of this bid fails through its provider (the node goes silent or
    /// unhealthy, or the provider stops it), the engine places its unused whole hours again
    /// as a new bid with the same terms, without the failed node: the new order's `rebidOf`
    /// and the lease's `rebidOrder` link them.
    #[graphql(default)]
    pub rebid_on_failure: bool,
    /// Nodes whose asks this bid never takes (at most 32).
    #[graphql(default)]
    pub exclude_nodes: Vec<NodeRefInput>,
}

/// A node by its provider's account and its name (names are the provider's own).
#[derive(Debug, InputObject)]
pub struct NodeRefInput {
    pub provider: ID,
    pub node: String,
}

#[derive(Debug, InputObject)]
pub struct AskInput {
    pub node: String,
    /// `nvidia` or `amd`.
    pub vendor: String,
    pub vram_gb: u32,
    /// `pcie`, `nvlink`, `nvswitch` or `infinity_fabric`.
    pub interconnect: String,
    pub region: String,
    pub available_until: DateTime<Utc>,
}

#[derive(Debug, InputObject)]
pub struct PlaceOrderInput {
    pub market: String,
    /// Your idempotency key, unique per account: a decimal up to 2^128 or a UUID. A retry
    /// with the same key returns the first order, never a second one.
    pub client_order_id: String,
    /// Per GPU-hour, a decimal string on the market's tick, e.g. "2.10".
    pub price: String,
    pub gpus: u32,
    #[graphql(default_with = "TimeInForce::Gtc")]
    pub time_in_force: TimeInForce,
    /// Required with `GTT`.
    pub expires_at: Option<DateTime<Utc>>,
    #[graphql(default)]
    pub post_only: bool,
    /// Exactly one of `bid` (traders) and `ask` (providers).
    pub bid: Option<BidInput>,
    pub ask: Option<AskInput>,
}

pub fn parse_name<T: std::str::FromStr<Err = contract::ParseError>>(
    what: &str,
    s: &str,
) -> Result<T, ApiError> {
    s.parse()
        .map_err(|e: contract::ParseError| ApiError::validation(format!("{what}: {e}")))
}

fn parse_vendor(s: &str) -> Result<Vendor, ApiError> {
    match s {
        "nvidia" => Ok(Vendor::Nvidia),
        "amd" => Ok(Vendor::Amd),
        _ => Err(ApiError::validation(format!(
            "vendor: unknown {s:?} (nvidia, amd)"
        ))),
    }
}

/// A money or count argument, or `VALIDATION` naming it.
pub fn money<T>(what: &str, r: Result<T, contract::MoneyError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::validation(format!("{what}: {e}")))
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp(at.timestamp_millis())
}

pub fn parse_order_id(id: &ID) -> Result<OrderId, ApiError> {
    OrderId::parse(id).map_err(|e| ApiError::validation(format!("orderId: {e}")))
}

pub fn parse_lease_id(id: &ID) -> Result<LeaseId, ApiError> {
    LeaseId::parse(id).map_err(|e| ApiError::validation(format!("leaseId: {e}")))
}

pub fn parse_batch(id: &ID) -> Result<SettlementId, ApiError> {
    SettlementId::parse(id).map_err(|e| ApiError::validation(format!("batch: {e}")))
}

pub fn parse_client_order_id(id: &str) -> Result<ClientOrderId, ApiError> {
    ClientOrderId::parse(id).map_err(|e| ApiError::validation(format!("clientOrderId: {e}")))
}

pub fn parse_idempotency_key(key: &str) -> Result<IdempotencyKey, ApiError> {
    IdempotencyKey::parse(key).map_err(|e| ApiError::validation(format!("idempotencyKey: {e}")))
}

/// Builds the engine's order and its options from the input.
pub fn new_order(
    p: &Principal,
    input: PlaceOrderInput,
) -> Result<(NewOrder, OrderOptions), ApiError> {
    let account = p.own_account()?;
    let mut options = OrderOptions::default();
    let terms = match (input.bid, input.ask) {
        (Some(bid), None) => {
            p.require(&[Role::Trader], "placing a bid")?;
            options = OrderOptions {
                rebid_on_failure: bid.rebid_on_failure,
                exclude_nodes: bid
                    .exclude_nodes
                    .iter()
                    .map(|n| {
                        Ok(NodeRef {
                            provider: AccountId::parse(&n.provider).map_err(|e| {
                                ApiError::validation(format!("excludeNodes: provider: {e}"))
                            })?,
                            node: parse_name::<NodeId>("excludeNodes: node", &n.node)?,
                        })
                    })
                    .collect::<Result<_, ApiError>>()?,
            };
            OrderTerms::Bid(BidSpec {
                hours: money("hours", Hours::new(u64::from(bid.hours)))?,
                min_vram_gb: bid.min_vram_gb,
                regions: bid
                    .regions
                    .iter()
                    .map(|r| parse_name::<Region>("region", r))
                    .collect::<Result<_, _>>()?,
                interconnects: bid
                    .interconnects
                    .iter()
                    .map(|i| parse_name::<Interconnect>("interconnect", i))
                    .collect::<Result<_, _>>()?,
                vendor: bid.vendor.as_deref().map(parse_vendor).transpose()?,
                min_reputation: money(
                    "minReputation",
                    Reputation::new(u64::from(bid.min_reputation)),
                )?,
                single_node: bid.single_node,
                all_or_none: bid.all_or_none,
                min_fill: bid
                    .min_fill
                    .map(|g| money("minFill", Gpus::new(u64::from(g))))
                    .transpose()?,
            })
        }
        (None, Some(ask)) => {
            p.require(&[Role::Provider], "placing an ask")?;
            OrderTerms::Ask(AskSpec {
                node: parse_name::<NodeId>("node", &ask.node)?,
                vendor: parse_vendor(&ask.vendor)?,
                vram_gb: ask.vram_gb,
                interconnect: parse_name::<Interconnect>("interconnect", &ask.interconnect)?,
                region: parse_name::<Region>("region", &ask.region)?,
                available_until: timestamp(ask.available_until),
            })
        }
        _ => return Err(ApiError::validation("give exactly one of `bid` and `ask`")),
    };
    let tif = match (input.time_in_force, input.expires_at) {
        (TimeInForce::Gtt, Some(at)) => EngineTif::Gtt {
            expires_at: timestamp(at),
        },
        (TimeInForce::Gtt, None) => {
            return Err(ApiError::validation("GTT needs `expiresAt`"));
        }
        (_, Some(_)) => {
            return Err(ApiError::validation("`expiresAt` goes only with GTT"));
        }
        (TimeInForce::Gtc, None) => EngineTif::Gtc,
        (TimeInForce::Ioc, None) => EngineTif::Ioc,
        (TimeInForce::Fok, None) => EngineTif::Fok,
    };
    let order = NewOrder {
        account,
        client_id: parse_client_order_id(&input.client_order_id)?,
        market: parse_market(&input.market)?,
        price: money("price", Price::parse(&input.price))?,
        gpus: money("gpus", Gpus::new(u64::from(input.gpus)))?,
        tif,
        post_only: input.post_only,
        terms,
    };
    Ok((order, options))
}

/// A blob's digest: a CIDv1 (raw, SHA-256) or `sha256:<hex>`.
pub fn parse_digest(text: &str) -> Result<contract::Digest, ApiError> {
    contract::Digest::parse(text).map_err(|e| ApiError::validation(e.to_string()))
}
