//! Leases and their jobs.

use async_graphql::{ComplexObject, Context, Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use contract::LeaseId;
use ledger::read::Key;
use rust_decimal::Decimal;

use crate::schema::state;

/// Which side of its leases an account lists (`ledger::read::LeaseRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "ledger::read::LeaseRole")]
pub enum LeaseRole {
    Buyer,
    Provider,
    Either,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Lease {
    #[graphql(skip)]
    pub key: Key,
    pub id: u64,
    pub market: String,
    pub buyer: u64,
    pub provider: u64,
    pub node: String,
    pub region: String,
    pub gpus: u32,
    pub price: Decimal,
    pub hours: u32,
    pub cost: Decimal,
    /// `created`, `running` or `ended`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub hours_used: Option<Decimal>,
    pub charged: Option<Decimal>,
    pub provider_earned: Option<Decimal>,
    pub end_reason: Option<String>,
}

impl From<ledger::read::Lease> for Lease {
    fn from(l: ledger::read::Lease) -> Lease {
        Lease {
            key: l.key,
            id: l.id.0,
            market: l.market.to_string(),
            buyer: l.buyer.0,
            provider: l.provider.0,
            node: l.node.to_string(),
            region: l.region.to_string(),
            gpus: l.gpus,
            price: l.price,
            hours: l.hours,
            cost: l.cost,
            status: l.state.as_str().to_owned(),
            created_at: l.created_at,
            started_at: l.started_at,
            ended_at: l.ended_at,
            hours_used: l.hours_used,
            charged: l.charged,
            provider_earned: l.provider_earned,
            end_reason: l.end_reason.map(|r| r.as_str().to_owned()),
        }
    }
}

#[ComplexObject]
impl Lease {
    /// The job its buyer submitted, if any (only the buyer and the provider see leases).
    #[graphql(complexity = "crate::schema::query::DB + child_complexity")]
    async fn job(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Job>> {
        let (partition, lease) = (self.key.partition, LeaseId(self.id));
        let job = state(ctx)
            .db(move |c| ledger::store::job(c, partition, lease))
            .await?;
        Ok(job.map(Job::from))
    }
}

/// A job for a lease, as its buyer submitted it.
#[derive(Debug, Clone, SimpleObject)]
pub struct Job {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub submitted_at: DateTime<Utc>,
    /// The end of the job's output (at most 48 KiB) as the provider's agent last sent it.
    pub log_tail: String,
    /// How the job ended, e.g. `exited 0` or `killed: the lease's time ran out`.
    pub outcome: Option<String>,
    pub log_at: Option<DateTime<Utc>>,
}

impl From<ledger::store::Job> for Job {
    fn from(j: ledger::store::Job) -> Job {
        Job {
            command: j.command,
            args: j.args,
            env: j
                .env
                .into_iter()
                .map(|(name, value)| EnvVar { name, value })
                .collect(),
            submitted_at: j.submitted_at,
            log_tail: j.log_tail,
            outcome: j.outcome,
            log_at: j.log_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject, InputObject)]
#[graphql(input_name = "EnvVarInput")]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}
