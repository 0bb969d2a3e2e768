//! Provider nodes: their keys and their signed reports.

use std::sync::Arc;

use async_graphql::{Context, Object};
use contract::codec::EventBody;
use contract::{Command, ErrorCode, LeaseId, NodeId, Rejection, Timestamp};
use ed25519_dalek::VerifyingKey;
use ledger::store::Registered;

use crate::auth::Role;
use crate::errors::ApiError;
use crate::reports;
use crate::schema::answer::{events, LeaseStart, ReportReceipt};
use crate::schema::input::parse_name;
use crate::schema::types::provider::TelemetrySample;
use crate::schema::{parse_market, principal, state};

#[derive(Debug, Default)]
pub struct NodeMutation;

#[Object]
impl NodeMutation {
    /// Registers a node's ed25519 public key (hex) for the calling provider; its agent signs
    /// every report with the private key.
    async fn register_node(
        &self,
        ctx: &Context<'_>,
        node: String,
        public_key: String,
    ) -> async_graphql::Result<bool> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "registering a node")?;
        let provider = p.own_account()?;
        let node_id = parse_name::<NodeId>("node", &node)?;
        let key = reports::parse_public_key(&public_key)?.to_bytes();
        let registered = state(ctx)
            .db(move |c| ledger::store::register_node_key(c, provider, node_id, key))
            .await?;
        match registered {
            Registered::New | Registered::Again => Ok(true),
            // A stolen provider key must not be able to swap a node's identity silently.
            Registered::OtherKey => Err(ApiError::forbidden(format!(
                "node {node} is registered with another key"
            ))
            .into()),
        }
    }

    /// Takes a node's signed report (`report`: the JSON exactly as signed; `signature`: the
    /// ed25519 signature in hex): a signed heartbeat for the engine (with the report as its
    /// evidence: it meters the node's leases and keeps the node alive), GPU samples, lease
    /// starts. A node not registered for the calling provider is `UNKNOWN_NODE`; a report the
    /// API refuses appends nothing.
    async fn submit_node_report(
        &self,
        ctx: &Context<'_>,
        report: String,
        signature: String,
    ) -> async_graphql::Result<ReportReceipt> {
        #[derive(serde::Deserialize)]
        struct Addressed {
            node: String,
        }
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "reporting for a node")?;
        let provider = p.own_account()?;
        let node = serde_json::from_str::<Addressed>(&report)
            .map_err(|e| ApiError::validation(format!("report: {e}")))?
            .node;
        let node_id = parse_name::<NodeId>("node", &node)?;
        let st = state(ctx);
        let key = st
            .db(move |c| ledger::store::node_key(c, provider, node_id))
            .await?
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownNode,
                    format!("node {node} is not registered for this provider: registerNode first"),
                )
            })?;
        let text = report;
        let report = reports::verify(&key, &text, &signature)?;
        let class = parse_market(&report.class)?;
        let heartbeat =
            reports::heartbeat(provider, node_id, class, &key, &text, &signature, &report)?;
        // The engine would refuse a heartbeat for a market it does not have, simulated GPUs
        // on a market not created as simulated, and a report dated outside the market's
        // window around its clock; refused here, the report appends nothing.
        let admitted = st.engine.replica().market_config(class).map(|config| {
            config.admits_report(
                class,
                report.simulated,
                Timestamp(report.at.timestamp_millis()),
                Timestamp(chrono::Utc::now().timestamp_millis()),
            )
        });
        let Some(admitted) = admitted else {
            return Err(ApiError::new(
                ErrorCode::UnknownMarket,
                format!("report: no market for the class {class}"),
            )
            .into());
        };
        let sequence = report.sequence;
        if st
            .db(move |c| ledger::store::report_seen(c, provider, node_id, sequence))
            .await?
        {
            return Ok(ReportReceipt {
                duplicate: true,
                lease_starts: Vec::new(),
            });
        }
        // After the duplicate check: a resent copy of a recorded report is acknowledged as
        // one, however old. A GPU another node has is refused here too (and by the engine,
        // should two nodes race past the replica), and both nodes are flagged.
        admitted.map_err(|refused| ApiError::rejected(&refused))?;
        let conflict = st.engine.replica().gpu_conflict(&heartbeat);
        let answer = match conflict {
            Ok(()) => {
                st.engine
                    .submit(Command::SignedHeartbeat(Box::new(heartbeat)))
                    .await?
            }
            Err(refused) => vec![EventBody::Rejected(refused)],
        };
        if let [EventBody::Rejected(Rejection::GpuAlreadyRegistered {
            uuid,
            provider: owner,
            node: owner_node,
        })] = &answer[..]
        {
            let (uuid, owner, owner_node) = (uuid.to_string(), *owner, *owner_node);
            st.db(move |c| {
                ledger::store::flag_nodes(c, &uuid, (provider, node_id), (owner, owner_node))
            })
            .await?;
            tracing::warn!(
                provider = provider.0,
                node = %node_id,
                owner = owner.0,
                owner_node = %owner_node,
                "a report named a GPU another node has: both nodes flagged"
            );
        }
        events(answer)?;
        let mut lease_starts = Vec::new();
        for &lease in &report.leases_started {
            // Punctuality is the provider's part: from the later of the fill and the
            // buyer's submission of the job.
            let lease_id = LeaseId(lease);
            let job = st.db(move |c| ledger::store::job(c, 0, lease_id)).await?;
            let command = match job {
                Some(job) => Command::StartLeaseJob {
                    provider,
                    lease_id,
                    job_submitted_at: Timestamp(job.submitted_at.timestamp_millis()),
                },
                None => Command::StartLease { provider, lease_id },
            };
            let answer = st.engine.submit(command).await?;
            // A start the engine already has is the resend of an earlier report.
            let refused = match events(answer) {
                Ok(_) => None,
                Err(e) if e.code == ErrorCode::LeaseAlreadyStarted => None,
                Err(e) => Some(e.code.as_str().to_owned()),
            };
            lease_starts.push(LeaseStart {
                lease_id: lease,
                refused,
            });
        }
        let recorded = report.clone();
        let fresh = st
            .db(move |c| ledger::store::record_report(c, provider, &recorded))
            .await?;
        // The signed report names each ended job's outputs: that seals them (the first
        // report to name them wins; a resend changes nothing).
        for out in report.outputs.clone() {
            let (lease, sequence) = (LeaseId(out.lease), report.sequence);
            let sealed = st
                .db(move |c| {
                    ledger::store::seal_outputs(
                        c,
                        lease,
                        provider,
                        &out.manifest,
                        &out.log,
                        &out.gpus,
                        sequence,
                    )
                })
                .await?;
            tracing::info!(
                lease = lease.0,
                sequence,
                sealed,
                "a job's outputs named by a signed report"
            );
        }
        if fresh {
            let _ = st
                .telemetry
                .send(Arc::new((provider, TelemetrySample::of(&report))));
        }
        Ok(ReportReceipt {
            duplicate: !fresh,
            lease_starts,
        })
    }
}
