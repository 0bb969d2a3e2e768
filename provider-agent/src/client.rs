//! The agent's side of the API: the operations it sends (api-client's, checked against the
//! schema when this builds) and what their answers mean to the agent.
//!
//! Architecture Invariant: the agent never ends a lease and never states hours. The engine
//! meters a lease from the node's signed reports (`healthy_leases`); the agent's word on a
//! job is its log and outcome, for the buyer.

use std::time::Duration;

use api_client::mutations::{
    AmendOrder, AmendOrderVariables, CancelOrder, CancelOrderVariables, PlaceOrder,
    PlaceOrderVariables, RegisterNode, RegisterNodeVariables, SubmitJobLog, SubmitJobLogVariables,
    SubmitNodeReport, SubmitNodeReportVariables,
};
use api_client::queries::{
    LeasesQuery, LeasesVariables, NodeStateQuery, NodeStateVariables, OrdersQuery, OrdersVariables,
};
use api_client::types::{AskInput, LeaseRole, OrderStatus, PlaceOrderInput, TimeInForce};
use api_client::{ErrorCode, Id, MutationBuilder, QueryBuilder, U64};

pub use api_client::ClientError;

/// What the API did with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub duplicate: bool,
    /// Lease starts the engine refused, with the code.
    pub refused_starts: Vec<(u64, String)>,
}

#[derive(Debug)]
pub struct Client {
    api: api_client::Client,
}

/// A count of GPUs the API sent, as the agent holds counts (no node has `u32::MAX` GPUs, so
/// the clamp never changes one).
fn count(n: U64) -> u32 {
    u32::try_from(n.0).unwrap_or(u32::MAX)
}

impl Client {
    pub fn new(api_url: &str, key: &str) -> Client {
        Client {
            api: api_client::Client::new(api_url, key).with_timeout(Duration::from_secs(10)),
        }
    }

    /// The API client itself, for blobs (`files`).
    pub fn api(&self) -> &api_client::Client {
        &self.api
    }

    pub fn register_node(&self, node: &str, public_key: &str) -> Result<(), ClientError> {
        self.api
            .run(&RegisterNode::build(RegisterNodeVariables {
                node: node.to_owned(),
                public_key: public_key.to_owned(),
            }))
            .map(|_| ())
    }

    pub fn submit_report(&self, report: &str, signature: &str) -> Result<Receipt, ClientError> {
        let receipt = self
            .api
            .run(&SubmitNodeReport::build(SubmitNodeReportVariables {
                report: report.to_owned(),
                signature: signature.to_owned(),
            }))?
            .submit_node_report;
        Ok(Receipt {
            duplicate: receipt.duplicate,
            refused_starts: receipt
                .lease_starts
                .into_iter()
                .filter_map(|s| Some((s.lease_id.0, s.refused?)))
                .collect(),
        })
    }
}

/// A lease on one of the provider's nodes, with its job if the buyer gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: u64,
    pub node: String,
    pub gpus: u32,
    pub hours: u32,
    /// `created` (no job started yet) or `running`.
    pub status: String,
    /// The end of its term: the engine ends it then, and the agent kills its job then.
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub job: Option<crate::jobs::JobSpec>,
}

/// One page of the provider's leases in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases {
    pub leases: Vec<LeaseInfo>,
    /// The page held every lease in the status (it was not full).
    pub complete: bool,
}

/// The most leases one `leases` read asks for.
const LEASE_PAGE: u64 = 500;

impl Client {
    /// The provider's leases in `status` (`created`, `running`, `ended`), oldest first.
    pub fn leases(&self, status: &str) -> Result<Leases, ClientError> {
        let leases = self
            .api
            .run(&LeasesQuery::build(LeasesVariables {
                role: LeaseRole::Provider,
                status: status.to_owned(),
                first: U64(LEASE_PAGE),
            }))?
            .leases
            .nodes;
        let complete = (leases.len() as u64) < LEASE_PAGE;
        let leases = leases
            .into_iter()
            .filter_map(|l| {
                Some(LeaseInfo {
                    id: l.id.0,
                    node: l.node,
                    gpus: u32::try_from(l.gpus.0).ok()?,
                    hours: u32::try_from(l.hours.0).ok()?,
                    status: l.status,
                    ends_at: l.ends_at,
                    job: l.job.map(|job| crate::jobs::JobSpec {
                        command: job.command,
                        args: job.args,
                        env: job.env.into_iter().map(|v| (v.name, v.value)).collect(),
                        image: job.image,
                        inputs: job.inputs.into_iter().map(|i| (i.cid, i.path)).collect(),
                        network: job.network,
                    }),
                })
            })
            .collect();
        Ok(Leases { leases, complete })
    }

    /// Sends the end of a job's output and, when over, how it ended.
    pub fn job_log(
        &self,
        lease: u64,
        tail: &str,
        outcome: Option<&str>,
    ) -> Result<(), ClientError> {
        self.api
            .run(&SubmitJobLog::build(SubmitJobLogVariables {
                lease_id: Id::new(lease.to_string()),
                log_tail: tail.to_owned(),
                outcome: outcome.map(str::to_owned),
            }))
            .map(|_| ())
    }
}

impl Client {
    /// The provider's open asks on `node`, oldest first: (order id, GPUs filled, GPUs still
    /// open).
    pub fn open_asks(&self, node: &str) -> Result<Vec<(u64, u32, u32)>, ClientError> {
        let orders = self
            .api
            .run(&OrdersQuery::build(OrdersVariables {
                status: Some(OrderStatus::Open),
                first: U64(500),
            }))?
            .orders
            .nodes;
        Ok(orders
            .into_iter()
            .filter(|o| o.side == "ask" && o.node.as_deref() == Some(node))
            .filter_map(|o| {
                let gpus = u32::try_from(o.gpus.0).ok()?;
                let remaining = u32::try_from(o.remaining.0).ok()?;
                Some((o.id.0, gpus.saturating_sub(remaining), remaining))
            })
            .collect())
    }

    /// Places the node's ask; returns its order id.
    #[allow(clippy::too_many_arguments)]
    pub fn place_ask(
        &self,
        client_id: &str,
        market: &str,
        offer: &crate::config::Offer,
        node: &str,
        region: &str,
        gpus: u32,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, ClientError> {
        let input = PlaceOrderInput {
            market: market.to_owned(),
            client_order_id: client_id.to_owned(),
            price: offer.price.clone(),
            gpus: U64(gpus.into()),
            time_in_force: TimeInForce::Gtc,
            bid: None,
            ask: Some(AskInput {
                node: node.to_owned(),
                vendor: offer.vendor.clone(),
                vram_gb: U64(offer.vram_gb.into()),
                interconnect: offer.interconnect.clone(),
                region: region.to_owned(),
                available_until: until,
            }),
        };
        let placed = self
            .api
            .run(&PlaceOrder::build(PlaceOrderVariables { input }))?;
        Ok(placed.place_order.order_id.0)
    }

    /// The node as the engine holds it, at one instant: GPUs in running leases, and the
    /// ask `ask` as (GPUs filled, GPUs still open) while it rests.
    pub fn node_state(
        &self,
        node: &str,
        ask: Option<u64>,
    ) -> Result<(u32, Option<(u32, u32)>), ClientError> {
        let state = self
            .api
            .run(&NodeStateQuery::build(NodeStateVariables {
                node: node.to_owned(),
                ask: ask.map(|a| Id::new(a.to_string())),
            }))?
            .node_state;
        Ok((
            count(state.leased_gpus),
            state.ask.map(|a| (count(a.filled), count(a.remaining))),
        ))
    }

    /// Sets the ask's whole quantity (filled GPUs included, as the engine counts it).
    pub fn amend_ask(&self, order: u64, gpus: u32) -> Result<(), ClientError> {
        self.api
            .run(&AmendOrder::build(AmendOrderVariables {
                order_id: Id::new(order.to_string()),
                gpus: Some(U64(gpus.into())),
            }))
            .map(|_| ())
    }

    pub fn cancel_order(&self, order: u64) -> Result<(), ClientError> {
        match self.api.run(&CancelOrder::build(CancelOrderVariables {
            order_id: Id::new(order.to_string()),
        })) {
            // Filled or cancelled meanwhile: gone either way.
            Err(ClientError::Refused {
                code: ErrorCode::UnknownOrder,
                ..
            }) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
