//! The agent's side of the GraphQL API.

use std::time::Duration;

use serde_json::{json, Value};

/// Why a call did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying later: no connection, a timeout, the API or its dependencies down, or
    /// a rate limit.
    #[error("API unreachable: {0}")]
    Unreachable(String),
    /// The API answered no, with its error code.
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
}

/// What the API did with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub duplicate: bool,
    /// Lease starts the engine refused, with the code.
    pub refused_starts: Vec<(u64, String)>,
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    url: String,
    key: String,
}

impl Client {
    pub fn new(api_url: &str, key: &str) -> Client {
        Client {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client with default TLS-less settings"),
            url: format!("{}/graphql", api_url.trim_end_matches('/')),
            key: key.trim().to_owned(),
        }
    }

    pub fn gql(&self, query: &str, variables: Value) -> Result<Value, ClientError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .map_err(|e| ClientError::Unreachable(format!("HTTP {status}: {e}")))?;
        if let Some(error) = body["errors"].get(0) {
            let code = error["extensions"]["code"]
                .as_str()
                .unwrap_or("UNKNOWN")
                .to_owned();
            let message = error["message"].as_str().unwrap_or_default().to_owned();
            return Err(match code.as_str() {
                "UNAVAILABLE" | "RATE_LIMITED" | "ENGINE_TIMEOUT" | "INTERNAL" => {
                    ClientError::Unreachable(format!("{code}: {message}"))
                }
                _ => ClientError::Refused { code, message },
            });
        }
        Ok(body["data"].clone())
    }

    pub fn register_node(&self, node: &str, public_key: &str) -> Result<(), ClientError> {
        self.gql(
            "mutation($n: String!, $k: String!) { registerNode(node: $n, publicKey: $k) }",
            json!({"n": node, "k": public_key}),
        )
        .map(|_| ())
    }

    pub fn submit_report(&self, report: &str, signature: &str) -> Result<Receipt, ClientError> {
        let data = self.gql(
            "mutation($r: String!, $s: String!) { submitNodeReport(report: $r, signature: $s) { duplicate leaseStarts { leaseId refused } } }",
            json!({"r": report, "s": signature}),
        )?;
        let receipt = &data["submitNodeReport"];
        Ok(Receipt {
            duplicate: receipt["duplicate"].as_bool().unwrap_or(false),
            refused_starts: receipt["leaseStarts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["leaseId"].as_u64()?, s["refused"].as_str()?.to_owned())))
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
    pub job: Option<crate::jobs::JobSpec>,
}

impl Client {
    /// The provider's leases in `status` (`created`, `running`, `ended`).
    pub fn leases(&self, status: &str) -> Result<Vec<LeaseInfo>, ClientError> {
        let data = self.gql(
            "query($s: String!) { leases(role: PROVIDER, status: $s, first: 500) { edges { node { id node gpus hours job { command args env { name value } } } } } }",
            json!({"s": status}),
        )?;
        Ok(data["leases"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|edge| {
                let l = &edge["node"];
                let job = l["job"].as_object().map(|job| crate::jobs::JobSpec {
                    command: job["command"].as_str().unwrap_or_default().to_owned(),
                    args: job["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect(),
                    env: job["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| {
                            Some((
                                v["name"].as_str()?.to_owned(),
                                v["value"].as_str()?.to_owned(),
                            ))
                        })
                        .collect(),
                });
                Some(LeaseInfo {
                    id: l["id"].as_u64()?,
                    node: l["node"].as_str()?.to_owned(),
                    gpus: u32::try_from(l["gpus"].as_u64()?).ok()?,
                    hours: u32::try_from(l["hours"].as_u64()?).ok()?,
                    job,
                })
            })
            .collect())
    }

    /// Sends the end of a job's output and, when over, how it ended.
    pub fn job_log(
        &self,
        lease: u64,
        tail: &str,
        outcome: Option<&str>,
    ) -> Result<(), ClientError> {
        self.gql(
            "mutation($l: ID!, $t: String!, $o: String) { submitJobLog(leaseId: $l, logTail: $t, outcome: $o) }",
            json!({"l": lease.to_string(), "t": tail, "o": outcome}),
        )
        .map(|_| ())
    }

    /// Ends a lease as its provider: completed, or failed by the provider.
    pub fn end_lease(&self, lease: u64, hours_used: f64, failed: bool) -> Result<(), ClientError> {
        self.gql(
            "mutation($l: ID!, $h: String!, $f: Boolean!) { endLease(leaseId: $l, hoursUsed: $h, providerFailed: $f) { leaseId } }",
            json!({"l": lease.to_string(), "h": format!("{hours_used:.6}"), "f": failed}),
        )
        .map(|_| ())
    }
}

impl Client {
    /// The provider's open asks on `node`, oldest first: (order id, GPUs filled, GPUs still
    /// open).
    pub fn open_asks(&self, node: &str) -> Result<Vec<(u64, u32, u32)>, ClientError> {
        let data = self.gql(
            "{ orders(status: OPEN, first: 500) { edges { node { id side node gpus remaining } } } }",
            json!({}),
        )?;
        Ok(data["orders"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["node"])
            .filter(|o| o["side"] == "ask" && o["node"] == node)
            .filter_map(|o| {
                let gpus = u32::try_from(o["gpus"].as_u64()?).ok()?;
                let remaining = u32::try_from(o["remaining"].as_u64()?).ok()?;
                Some((o["id"].as_u64()?, gpus.saturating_sub(remaining), remaining))
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
        let data = self.gql(
            "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { orderId } }",
            json!({"i": {"market": market, "clientOrderId": client_id, "price": offer.price,
                "gpus": gpus, "ask": {"node": node, "vendor": offer.vendor, "vramGb": offer.vram_gb,
                "interconnect": offer.interconnect, "region": region,
                "availableUntil": until.to_rfc3339()}}}),
        )?;
        data["placeOrder"]["orderId"]
            .as_u64()
            .ok_or_else(|| ClientError::Unreachable("no order id in the answer".into()))
    }

    /// The node as the engine holds it, at one instant: GPUs in running leases, and the
    /// ask `ask` as (GPUs filled, GPUs still open) while it rests.
    pub fn node_state(
        &self,
        node: &str,
        ask: Option<u64>,
    ) -> Result<(u32, Option<(u32, u32)>), ClientError> {
        let data = self.gql(
            "query($n: String!, $a: ID) { nodeState(node: $n, ask: $a) { leasedGpus ask { filled remaining } } }",
            json!({"n": node, "a": ask.map(|a| a.to_string())}),
        )?;
        let state = &data["nodeState"];
        let ask = state["ask"].as_object().map(|a| {
            (
                a["filled"].as_u64().unwrap_or(0) as u32,
                a["remaining"].as_u64().unwrap_or(0) as u32,
            )
        });
        Ok((state["leasedGpus"].as_u64().unwrap_or(0) as u32, ask))
    }

    /// Sets the ask's whole quantity (filled GPUs included, as the engine counts it).
    pub fn amend_ask(&self, order: u64, gpus: u32) -> Result<(), ClientError> {
        self.gql(
            "mutation($o: ID!, $g: Int!) { amendOrder(orderId: $o, gpus: $g) { orderId } }",
            json!({"o": order.to_string(), "g": gpus}),
        )
        .map(|_| ())
    }

    pub fn cancel_order(&self, order: u64) -> Result<(), ClientError> {
        match self.gql(
            "mutation($o: ID!) { cancelOrder(orderId: $o) { orderId } }",
            json!({"o": order.to_string()}),
        ) {
            // Filled or cancelled meanwhile: gone either way.
            Err(ClientError::Refused { code, .. }) if code == "UNKNOWN_ORDER" => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
