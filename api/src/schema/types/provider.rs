//! Providers, their nodes, telemetry and the history of their score.

use async_graphql::{ComplexObject, Context, SimpleObject};
use chrono::{DateTime, Utc};
use contract::{AccountId, NodeId, NodeReport};

use crate::schema::types::money::{bonds_of, Bond, Slash};
use crate::schema::{state, MAX_PAGE};

/// A provider, its score with the components it is computed from, and its nodes.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Provider {
    pub account: u64,
    /// 0 to 1000: round(1000 × (0.5 completion + 0.3 uptime + 0.2 punctuality) × integrity),
    /// where integrity is 0.85 per spec mismatch × 0.9 per slash.
    pub score: u32,
    pub completion: f64,
    pub uptime: f64,
    pub punctuality: f64,
    pub integrity: f64,
    pub leases_completed: u32,
    pub leases_failed: u32,
    pub starts: u32,
    pub starts_on_time: u32,
    pub spec_mismatches: u32,
    /// Provider failures that slashed its bond.
    pub slashes: u32,
    /// The score the engine matches this provider's asks by (what `minReputation` is
    /// compared with): the projection's score once the API has sent it, null before.
    pub matching_score: Option<u32>,
    pub updated_at: DateTime<Utc>,
}

impl From<ledger::read::Provider> for Provider {
    fn from(p: ledger::read::Provider) -> Provider {
        Provider {
            account: p.account.0,
            score: p.score,
            completion: p.completion,
            uptime: p.uptime,
            punctuality: p.punctuality,
            integrity: p.integrity,
            leases_completed: p.leases_completed,
            leases_failed: p.leases_failed,
            starts: p.starts,
            starts_on_time: p.starts_on_time,
            spec_mismatches: p.spec_mismatches,
            slashes: p.slashes,
            matching_score: p.matching_score,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Node {
    pub node: String,
    pub advertised_class: Option<String>,
    pub advertised_gpus: Option<u32>,
    pub reported_class: Option<String>,
    pub reported_gpus: Option<u32>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub heartbeats: u64,
    pub up_ms: u64,
    pub down_ms: u64,
    /// The node's reported hardware differs from what its asks advertise.
    pub mismatching: bool,
}

impl From<ledger::read::Node> for Node {
    fn from(n: ledger::read::Node) -> Node {
        Node {
            node: n.node.to_string(),
            advertised_class: n.advertised_class.map(|c| c.to_string()),
            advertised_gpus: n.advertised_gpus,
            reported_class: n.reported_class.map(|c| c.to_string()),
            reported_gpus: n.reported_gpus,
            last_heartbeat: n.last_heartbeat,
            heartbeats: n.heartbeats,
            up_ms: n.up_ms,
            down_ms: n.down_ms,
            mismatching: n.mismatching,
        }
    }
}

/// A node as its latest accepted signed report shows it.
#[derive(Debug, Clone, SimpleObject)]
pub struct VerifiedNode {
    pub node: String,
    /// Its heartbeats stopped: its asks were withdrawn and it cannot be matched.
    pub silent: bool,
    pub gpus: Vec<VerifiedGpu>,
}

/// One GPU as NVML or ROCm SMI identified it in a signed report.
#[derive(Debug, Clone, SimpleObject)]
pub struct VerifiedGpu {
    pub index: u32,
    pub model: String,
    pub uuid: String,
    pub memory_mb: Option<u64>,
    pub pci_bus_id: Option<String>,
    pub healthy: bool,
}

/// The market checker's verdict on a node: a known-answer job (a reference frame whose
/// pixels the market knows, and a compute kernel whose result it knows) on a lease it
/// bought from the node. A failed check is a slashed provider failure.
#[derive(Debug, Clone, SimpleObject)]
pub struct NodeCheck {
    pub market: String,
    pub node: String,
    pub lease: u64,
    pub passed: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A node flagged because its report named a GPU UUID another node reported.
#[derive(Debug, Clone, SimpleObject)]
pub struct NodeFlag {
    pub node: String,
    pub uuid: String,
    pub other_provider: u64,
    pub other_node: String,
    pub last_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ReputationChange {
    pub at: DateTime<Utc>,
    /// What changed the record, e.g. `lease_ended:completed` or `spec_mismatch`.
    pub cause: String,
    pub score: u32,
    pub completion: f64,
    pub uptime: f64,
    pub punctuality: f64,
    pub integrity: f64,
}

impl From<ledger::read::ReputationChange> for ReputationChange {
    fn from(r: ledger::read::ReputationChange) -> ReputationChange {
        ReputationChange {
            at: r.at,
            cause: r.cause,
            score: r.score,
            completion: r.completion,
            uptime: r.uptime,
            punctuality: r.punctuality,
            integrity: r.integrity,
        }
    }
}

/// One GPU's reading from a signed node report. Null: the agent could not read it.
#[derive(Debug, Clone, SimpleObject)]
pub struct TelemetrySample {
    pub node: String,
    pub gpu: u32,
    pub at: DateTime<Utc>,
    pub name: String,
    pub uuid: String,
    pub utilisation_pct: Option<f32>,
    pub memory_used_mb: Option<u64>,
    pub memory_total_mb: Option<u64>,
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    pub power_limit_w: Option<f32>,
    pub sm_clock_mhz: Option<u32>,
    pub ecc_errors: Option<u64>,
    /// From the agent's simulated source, not real hardware.
    pub simulated: bool,
}

impl From<ledger::read::TelemetrySample> for TelemetrySample {
    fn from(s: ledger::read::TelemetrySample) -> TelemetrySample {
        TelemetrySample {
            node: s.node.to_string(),
            gpu: s.gpu,
            at: s.at,
            name: s.name,
            uuid: s.uuid,
            utilisation_pct: s.utilisation_pct,
            memory_used_mb: s.memory_used_mb,
            memory_total_mb: s.memory_total_mb,
            temperature_c: s.temperature_c,
            power_w: s.power_w,
            power_limit_w: s.power_limit_w,
            sm_clock_mhz: s.sm_clock_mhz,
            ecc_errors: s.ecc_errors,
            simulated: s.simulated,
        }
    }
}

impl TelemetrySample {
    /// The samples of a report just accepted, for the telemetry subscription.
    pub fn of(report: &NodeReport) -> Vec<TelemetrySample> {
        report
            .gpus
            .iter()
            .map(|g| TelemetrySample {
                node: report.node.clone(),
                gpu: g.index,
                at: report.at,
                name: g.name.clone(),
                uuid: g.uuid.clone(),
                utilisation_pct: g.utilisation_pct,
                memory_used_mb: g.memory_used_mb,
                memory_total_mb: g.memory_total_mb,
                temperature_c: g.temperature_c,
                power_w: g.power_w,
                power_limit_w: g.power_limit_w,
                sm_clock_mhz: g.sm_clock_mhz,
                ecc_errors: g.ecc_errors,
                simulated: report.simulated,
            })
            .collect()
    }
}

#[ComplexObject]
impl Provider {
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn nodes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Node>> {
        let provider = AccountId(self.account);
        let nodes = state(ctx)
            .db(move |c| ledger::read::nodes(c, provider))
            .await?;
        Ok(nodes.into_iter().map(Node::from).collect())
    }

    /// The latest GPU samples of the provider's nodes (signed reports), newest first.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn telemetry(
        &self,
        ctx: &Context<'_>,
        node: Option<String>,
        #[graphql(default = 60)] last: i32,
    ) -> async_graphql::Result<Vec<TelemetrySample>> {
        let provider = AccountId(self.account);
        let node = node
            .map(|n| crate::schema::input::parse_name::<NodeId>("node", &n))
            .transpose()?;
        let last = last.clamp(1, MAX_PAGE as i32) as u32;
        let samples = state(ctx)
            .db(move |c| ledger::read::telemetry(c, provider, node, last))
            .await?;
        Ok(samples.into_iter().map(TelemetrySample::from).collect())
    }

    /// Its GPUs as the engine verified them: each node's latest accepted signed report
    /// (model, UUID, memory, PCI bus id), which its asks stand on.
    async fn verified_nodes(&self, ctx: &Context<'_>) -> Vec<VerifiedNode> {
        let engine = state(ctx).engine.replica();
        engine
            .nodes_of(AccountId(self.account))
            .into_iter()
            .map(|(node, silent, gpus)| VerifiedNode {
                node: node.to_string(),
                silent,
                gpus: gpus
                    .iter()
                    .map(|g| VerifiedGpu {
                        index: g.index,
                        model: g.model.to_string(),
                        uuid: g.uuid.to_string(),
                        memory_mb: g.memory_mb,
                        pci_bus_id: g.pci_bus_id.as_ref().map(|p| p.to_string()),
                        healthy: g.healthy,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Its bonds per market, from the engine.
    async fn bonds(&self, ctx: &Context<'_>) -> Vec<Bond> {
        bonds_of(&state(ctx).engine.replica(), AccountId(self.account))
    }

    /// Its latest slashes: what each provider failure cost its bond, why, and the evidence
    /// (the buyer's account only to the parties, finance and admin).
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn slash_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<Slash>> {
        let provider = AccountId(self.account);
        let first = first.clamp(1, MAX_PAGE as i32) as u32;
        let page = state(ctx)
            .db(move |c| ledger::read::slashes(c, Some(provider), None, first))
            .await?;
        // Who bought from whom is the parties' business.
        let p = crate::schema::principal(ctx).ok();
        let party = p
            .as_ref()
            .is_some_and(|p| p.account_to_read(Some(provider)).is_ok());
        Ok(page
            .rows
            .into_iter()
            .filter(|s| s.provider == provider)
            .map(|s| {
                let buyer_sees = p.as_ref().is_some_and(|p| p.account == Some(s.buyer));
                let mut slash = Slash::from(s);
                if !(party || buyer_sees) {
                    slash.buyer = None;
                }
                slash
            })
            .collect())
    }

    /// The market checker's latest verdicts on its nodes, newest first: public, so buyers
    /// see them before they buy.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn checks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<NodeCheck>> {
        let provider = AccountId(self.account);
        let first = first.clamp(1, MAX_PAGE as i32) as u32;
        let checks = state(ctx)
            .db(move |c| ledger::read::node_checks(c, provider, first))
            .await?;
        Ok(checks
            .into_iter()
            .map(|c| NodeCheck {
                market: c.market.to_string(),
                node: c.node.to_string(),
                lease: c.lease_id.0,
                passed: c.passed,
                detail: c.detail,
                at: c.at,
            })
            .collect())
    }

    /// Its nodes flagged for reporting a GPU another node reported too: for the provider
    /// itself (and finance and admin) only, since anyone may claim any UUID and a flag is
    /// a fact about a report, not a verdict.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn flags(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<NodeFlag>> {
        let provider =
            crate::schema::principal(ctx)?.account_to_read(Some(AccountId(self.account)))?;
        let flags = state(ctx)
            .db(move |c| ledger::read::node_flags(c, provider))
            .await?;
        Ok(flags
            .into_iter()
            .map(|f| NodeFlag {
                node: f.node.to_string(),
                uuid: f.uuid,
                other_provider: f.other_provider.0,
                other_node: f.other_node.to_string(),
                last_at: f.last_at,
            })
            .collect())
    }

    /// Why the score is what it is: the latest changes, newest first.
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] last: i32,
    ) -> async_graphql::Result<Vec<ReputationChange>> {
        let provider = AccountId(self.account);
        let last = last.clamp(1, MAX_PAGE as i32) as u32;
        let changes = state(ctx)
            .db(move |c| ledger::read::reputation_history(c, provider, last))
            .await?;
        Ok(changes.into_iter().map(ReputationChange::from).collect())
    }
}
