//! The query root: the ledger's read models (through `ledger::read`) and the engine
//! client's replica (live depth, balances, resting orders). Fields that read the database
//! carry a complexity of [`DB`], so aliases of them count against the limit as the queries
//! they cost.

use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use contract::{Amount, LeaseState, NodeId};
use ledger::read::{
    JournalFilter, JournalKey, LeaseFilter, OrderFilter, SettlementFilter, TradeFilter,
};

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::input::{money, parse_name, parse_order_id};
use crate::schema::types::lease::{Lease, LeaseRole};
use crate::schema::types::market::{depth, Depth, Market};
use crate::schema::types::money::{
    bonds_of, usage_page, Accrued, Balance, Bond, DepositInstructions, Earning, Invoice,
    JournalEntry, Me, Slash, UsageLine,
};
use crate::schema::types::order::{NodeState, Order, OrderStatus, RestingOrder, Trade};
use crate::schema::types::provider::Provider;
use crate::schema::types::settlement::{Settlement, SettlementBatch, SettlementState};
use crate::schema::{
    account_to_read, connection, key_cursor, key_string, month_cursor, month_string, page_size,
    parse_account, parse_cursor, parse_market, principal, six, state, time_range, Page,
};

/// The complexity of a field that reads the database once.
pub const DB: usize = 10;

/// The query root's fields but those of [`crate::schema::blobs`].
#[derive(Debug, Default)]
pub struct MarketQuery;

#[Object]
impl MarketQuery {
    /// The key making the request.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let p = principal(ctx)?;
        Ok(Me {
            key_id: p.key_id,
            role: p.role,
            account: p.account.map(|a| a.0),
        })
    }

    #[graphql(complexity = "DB + child_complexity")]
    async fn markets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Market>> {
        let markets = state(ctx).db(ledger::read::markets).await?;
        Ok(markets.into_iter().map(Market::from).collect())
    }

    /// The live book of a market: the best `levels` prices of each side.
    async fn depth(
        &self,
        ctx: &Context<'_>,
        market: String,
        #[graphql(default = 10)] levels: i32,
    ) -> async_graphql::Result<Depth> {
        Ok(depth(state(ctx), &market, levels)?)
    }

    /// Trades (fills), oldest first, optionally of one market and within `[from, to)`.
    #[graphql(complexity = "DB + child_complexity")]
    async fn trades(
        &self,
        ctx: &Context<'_>,
        market: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Trade>> {
        let limit = page_size(first)?;
        let cursor = key_cursor(after.as_deref())?;
        let (from, to) = time_range(from, to)?;
        let filter = TradeFilter {
            market: market.as_deref().map(parse_market).transpose()?,
            from,
            to,
        };
        let page = state(ctx)
            .db(move |c| ledger::read::trades(c, &filter, cursor, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |t| key_string(t.key),
            Trade::from,
        ))
    }

    /// Orders of an account (a trader's or provider's own; finance and admin name one),
    /// oldest first, optionally of one market and status.
    #[graphql(complexity = "DB + child_complexity")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        market: Option<String>,
        status: Option<OrderStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Order>> {
        let filter = OrderFilter {
            account: account_to_read(ctx, account.as_ref())?,
            market: market.as_deref().map(parse_market).transpose()?,
            status: status.map(Into::into),
        };
        let limit = page_size(first)?;
        let cursor = key_cursor(after.as_deref())?;
        let page = state(ctx)
            .db(move |c| ledger::read::orders(c, &filter, cursor, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |o| key_string(o.key),
            Order::from,
        ))
    }

    /// Leases an account bought or provided, oldest first.
    #[graphql(complexity = "DB + child_complexity")]
    async fn leases(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        #[graphql(default_with = "LeaseRole::Either")] role: LeaseRole,
        status: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Lease>> {
        let state_is = status
            .map(|s| {
                s.parse::<LeaseState>().map_err(|_| {
                    ApiError::validation(format!(
                        "unknown lease status {s:?} (created, running, ended)"
                    ))
                })
            })
            .transpose()?;
        let filter = LeaseFilter {
            account: account_to_read(ctx, account.as_ref())?,
            role: role.into(),
            state: state_is,
        };
        let limit = page_size(first)?;
        let cursor = key_cursor(after.as_deref())?;
        let page = state(ctx)
            .db(move |c| ledger::read::leases(c, &filter, cursor, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |l| key_string(l.key),
            Lease::from,
        ))
    }

    /// Providers by account (a key that stays put while scores move), with the
    /// components, nodes and history. Filters: `minScore` keeps those scoring at least that
    /// (0 to 1000); `model` those with a reporting node whose latest signed report shows a
    /// GPU of that model name (as NVML or ROCm SMI report it, e.g. `NVIDIA H100 80GB HBM3`);
    /// `minBond` those whose bond over all markets (free and held) is at least that.
    #[graphql(complexity = "DB + child_complexity")]
    async fn providers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        min_score: Option<i32>,
        model: Option<String>,
        min_bond: Option<String>,
    ) -> async_graphql::Result<Page<Provider>> {
        let limit = page_size(first)?;
        let min_score = match min_score {
            None => 0,
            Some(s @ 0..=1_000) => s as u32,
            Some(s) => {
                return Err(ApiError::validation(format!("minScore: 0 to 1000 (got {s})")).into())
            }
        };
        let min_bond = min_bond
            .map(|b| money("minBond", Amount::parse(&b)))
            .transpose()?;
        if min_bond.is_some_and(|b| b.micros() < 0) {
            return Err(ApiError::validation("minBond: not negative").into());
        }
        let mut cursor = after
            .as_deref()
            .map(|a| {
                let [_, account] = parse_cursor::<2>(a)?;
                u64::try_from(account)
                    .map(contract::AccountId)
                    .map_err(|_| ApiError::validation(format!("malformed cursor {a:?}")))
            })
            .transpose()?;
        let st = state(ctx);
        // The model and the bond are the engine's: providers are read a page at a time and
        // kept where the replica says they qualify, until the page is full.
        let qualifies = |p: &ledger::read::Provider| {
            let engine = st.engine.replica();
            let has_model = model.as_deref().is_none_or(|m| {
                engine.nodes_of(p.account).iter().any(|(_, silent, gpus)| {
                    !silent && gpus.iter().any(|g| g.healthy && g.model.as_str() == m)
                })
            });
            let bonded = min_bond.is_none_or(|min| {
                let total: i128 = engine
                    .bonds_of(p.account)
                    .iter()
                    .map(|(_, b)| i128::from(b.free.micros()) + i128::from(b.held.micros()))
                    .sum();
                total >= i128::from(min.micros())
            });
            has_model && bonded
        };
        let mut rows = Vec::new();
        let more = loop {
            let page = st
                .db(move |c| ledger::read::providers(c, cursor, min_score, limit))
                .await?;
            let mut left = page.rows.into_iter();
            for p in left.by_ref() {
                cursor = Some(p.account);
                if qualifies(&p) {
                    rows.push(p);
                    if rows.len() == limit as usize {
                        break;
                    }
                }
            }
            if rows.len() == limit as usize {
                break left.next().is_some() || page.more;
            }
            if !page.more {
                break false;
            }
        };
        Ok(connection(
            ledger::read::Page { rows, more },
            after.is_some(),
            |p| format!("0:{}", p.account),
            Provider::from,
        ))
    }

    /// A provider's bonds in every market it posted in, with the withdrawals waiting for
    /// their release (public: buyers judge providers by them).
    async fn bonds(&self, ctx: &Context<'_>, provider: ID) -> async_graphql::Result<Vec<Bond>> {
        let provider = parse_account(Some(&provider))?.expect("given");
        Ok(bonds_of(&state(ctx).engine.replica(), provider))
    }

    /// The slashes the caller took part in, as provider or buyer (finance and admin name an
    /// account, or read all), by lease id: what each provider failure cost the bond, the
    /// buyer's credit, the insurance fund's part, the cause and its evidence.
    #[graphql(complexity = "DB + child_complexity")]
    async fn slashes(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Slash>> {
        let limit = page_size(first)?;
        let p = principal(ctx)?;
        let account = match (&account, p.role) {
            (None, Role::Admin | Role::Finance) => None,
            _ => Some(account_to_read(ctx, account.as_ref())?),
        };
        let after_lease = after
            .as_deref()
            .map(|a| {
                let [_, lease] = parse_cursor::<2>(a)?;
                u64::try_from(lease)
                    .map(contract::LeaseId)
                    .map_err(|_| ApiError::validation(format!("malformed cursor {a:?}")))
            })
            .transpose()?;
        let page = state(ctx)
            .db(move |c| ledger::read::slashes(c, account, after_lease, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |s| format!("0:{}", s.lease_id.0),
            Slash::from,
        ))
    }

    /// One provider by account, with its nodes, telemetry and reputation.
    #[graphql(complexity = "DB + child_complexity")]
    async fn provider(
        &self,
        ctx: &Context<'_>,
        account: ID,
    ) -> async_graphql::Result<Option<Provider>> {
        let account = parse_account(Some(&account))?.expect("given");
        let provider = state(ctx)
            .db(move |c| ledger::read::provider(c, account))
            .await?;
        Ok(provider.map(Provider::from))
    }

    /// An account's balance as the engine holds it now (a trader's or provider's own;
    /// finance and admin name one).
    async fn balance(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
    ) -> async_graphql::Result<Balance> {
        let account = account_to_read(ctx, account.as_ref())?;
        let b = state(ctx).engine.replica().balance(account);
        Ok(Balance {
            account: account.0,
            available: six(b.available.to_decimal()),
            held: six(b.held.to_decimal()),
            in_lease: six(b.in_lease.to_decimal()),
            settling: six(b.settling.to_decimal()),
            bonded: six(b.bonded.to_decimal()),
        })
    }

    /// Journal transactions that touch an account, in time order, within `[from, to)`.
    #[graphql(complexity = "DB + child_complexity")]
    async fn journal(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<JournalEntry>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let (from, to) = time_range(from, to)?;
        let cursor = after
            .as_deref()
            .map(|a| {
                let malformed = || ApiError::validation(format!("malformed cursor {a:?}"));
                let [micros, partition, seq] = parse_cursor::<3>(a)?;
                Ok::<_, ApiError>(JournalKey {
                    at: DateTime::from_timestamp_micros(micros).ok_or_else(malformed)?,
                    partition: u32::try_from(partition).map_err(|_| malformed())?,
                    event_seq: u64::try_from(seq).map_err(|_| malformed())?,
                })
            })
            .transpose()?;
        let filter = JournalFilter {
            account: Some(account),
            from,
            to,
        };
        let page = state(ctx)
            .db(move |c| ledger::read::journal(c, &filter, cursor, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |e| {
                let key = e.key();
                format!(
                    "{}:{}:{}",
                    key.at.timestamp_micros(),
                    key.partition,
                    key.event_seq
                )
            },
            JournalEntry::from,
        ))
    }

    /// An account's monthly invoices, newest first.
    #[graphql(complexity = "DB + child_complexity")]
    async fn invoices(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Invoice>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let before = month_cursor(after.as_deref())?;
        let page = state(ctx)
            .db(move |c| ledger::read::invoices(c, account, before, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |i| month_string(i.period),
            Invoice::from,
        ))
    }

    /// A provider's monthly statements (earnings), newest first.
    #[graphql(complexity = "DB + child_complexity")]
    async fn earnings(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Earning>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let limit = page_size(first)?;
        let before = month_cursor(after.as_deref())?;
        let page = state(ctx)
            .db(move |c| ledger::read::earnings(c, account, before, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |e| month_string(e.period),
            |e| Earning::of(account, e),
        ))
    }

    /// An account's usage, one line per lease and charge period, whose period starts within
    /// `[from, to)`, in period order: as the buyer (`role: BUYER`), the provider
    /// (`PROVIDER`) or either. Lines of running leases are accrued (`settled: false`).
    #[graphql(complexity = "DB + child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        #[graphql(default_with = "LeaseRole::Either")] role: LeaseRole,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<UsageLine>> {
        let account = account_to_read(ctx, account.as_ref())?;
        let range = time_range(from, to)?;
        Ok(usage_page(ctx, account, role.into(), range, first, after).await?)
    }

    /// Revenue accrued and not yet settled (the usage of leases that still run): the whole
    /// market's, or one provider's (finance and admin); a provider's own (providers).
    #[graphql(complexity = "DB + child_complexity")]
    async fn accrued(
        &self,
        ctx: &Context<'_>,
        provider: Option<ID>,
    ) -> async_graphql::Result<Accrued> {
        let p = principal(ctx)?;
        let provider = match p.role {
            Role::Finance | Role::Admin => parse_account(provider.as_ref())?,
            Role::Provider => Some(p.account_to_read(parse_account(provider.as_ref())?)?),
            Role::Trader => {
                return Err(
                    ApiError::forbidden("accrued revenue is for providers and finance").into(),
                )
            }
        };
        let accrued = state(ctx)
            .db(move |c| ledger::read::accrued(c, provider))
            .await?;
        Ok(Accrued::of(provider, accrued))
    }

    /// Each provider's revenue accrued and not yet settled, by account (finance, admin).
    #[graphql(complexity = "DB + child_complexity")]
    async fn accrued_by_provider(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Accrued>> {
        principal(ctx)?.require(&[Role::Finance, Role::Admin], "accrued revenue by provider")?;
        let limit = page_size(first)?;
        let after_account = after
            .as_deref()
            .map(|a| {
                let [_, account] = parse_cursor::<2>(a)?;
                u64::try_from(account)
                    .map(contract::AccountId)
                    .map_err(|_| ApiError::validation(format!("malformed cursor {a:?}")))
            })
            .transpose()?;
        let page = state(ctx)
            .db(move |c| ledger::read::accrued_by_provider(c, after_account, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |p| format!("0:{}", p.provider),
            |p| Accrued::of(Some(p.provider), p.accrued),
        ))
    }

    /// A resting order as the engine holds it now (the caller's own; finance and admin any):
    /// null once it is filled, cancelled or expired. Unlike `orders`, which reads the
    /// projections, this never lags the engine.
    async fn resting_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<RestingOrder>> {
        let p = principal(ctx)?;
        let id = parse_order_id(&id)?;
        let engine = state(ctx).engine.replica();
        // Another account's order reads as absent, as if unknown.
        Ok(engine
            .order(id)
            .filter(|order| p.account_to_read(Some(order.account)).is_ok())
            .map(RestingOrder::from))
    }

    /// A provider's node as the engine holds it now, read at one instant: the GPUs in its
    /// running leases and, given the node's ask, that ask. An agent sizes its ask from this
    /// without racing fills.
    async fn node_state(
        &self,
        ctx: &Context<'_>,
        node: String,
        ask: Option<ID>,
    ) -> async_graphql::Result<NodeState> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "a node's state")?;
        let provider = p.own_account()?;
        let node = parse_name::<NodeId>("node", &node)?;
        let ask = ask.as_ref().map(parse_order_id).transpose()?;
        let engine = state(ctx).engine.replica();
        let leased_gpus = engine
            .leases()
            .filter(|l| l.provider == provider && l.node == node)
            .map(|l| l.gpus)
            .sum();
        let ask = ask
            .and_then(|id| engine.order(id))
            .filter(|o| o.account == provider)
            .map(RestingOrder::from);
        Ok(NodeState { leased_gpus, ask })
    }

    /// Events the API has read that the slowest projection has not applied yet: zero means
    /// every query over the projections is as new as the engine's answers so far.
    #[graphql(complexity = "DB")]
    async fn projection_lag(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let st = state(ctx);
        let read = st.engine.events_read();
        let positions = st.db(ledger::read::projector_positions).await?;
        Ok(positions
            .iter()
            .map(|(_, next)| read.saturating_sub(*next))
            .max()
            .unwrap_or(read))
    }

    /// Settlement batches, newest first. Traders and providers see the batches that pay
    /// them; finance and admin see all (or one account's with `account`).
    #[graphql(complexity = "DB + child_complexity")]
    async fn settlements(
        &self,
        ctx: &Context<'_>,
        account: Option<ID>,
        state_is: Option<SettlementState>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Settlement>> {
        let p = principal(ctx)?;
        let (filter, visible_to) = match p.role {
            Role::Trader | Role::Provider => {
                let own = account_to_read(ctx, account.as_ref())?;
                (Some(own), Some(own))
            }
            Role::Finance | Role::Admin => (parse_account(account.as_ref())?, None),
        };
        let filter = SettlementFilter {
            account: filter,
            state: state_is.map(Into::into),
        };
        let limit = page_size(first)?;
        let before = after
            .as_deref()
            .map(|a| {
                let [_, batch] = parse_cursor::<2>(a)?;
                u64::try_from(batch)
                    .map(contract::SettlementId)
                    .map_err(|_| ApiError::validation(format!("malformed cursor {a:?}")))
            })
            .transpose()?;
        let page = state(ctx)
            .db(move |c| ledger::read::settlements(c, &filter, before, limit))
            .await?;
        Ok(connection(
            page,
            after.is_some(),
            |s| format!("0:{}", s.batch),
            |s| Settlement::of(s, visible_to),
        ))
    }

    /// The engine's open settlement batch, if any (finance, admin).
    async fn pending_settlement(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<SettlementBatch>> {
        principal(ctx)?.require(&[Role::Finance, Role::Admin], "the open settlement")?;
        Ok(state(ctx)
            .engine
            .replica()
            .open_settlement_batch()
            .map(|(batch, payouts)| SettlementBatch::new(Some(batch), payouts)))
    }

    /// What a settlement batch opened now would pay (finance, admin).
    async fn settlement_due(
        &self,
        ctx: &Context<'_>,
        min_payout: String,
        #[graphql(default = 100)] max_payouts: u32,
    ) -> async_graphql::Result<SettlementBatch> {
        principal(ctx)?.require(&[Role::Finance, Role::Admin], "settlement previews")?;
        let min_payout = money("minPayout", Amount::parse(&min_payout))?;
        let due = state(ctx)
            .engine
            .replica()
            .settlement_due(min_payout, max_payouts);
        Ok(SettlementBatch::new(None, &due))
    }

    /// Where and how the caller deposits funds.
    async fn deposit_instructions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<DepositInstructions> {
        let account = principal(ctx)?.own_account()?;
        let escrow = state(ctx).config.escrow_address.clone().ok_or_else(|| {
            ApiError::unavailable("no settlement chain is configured (--escrow-address)")
        })?;
        Ok(DepositInstructions {
            escrow_address: escrow,
            memo: account.0.to_string(),
        })
    }
}
