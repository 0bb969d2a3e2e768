//! Markets and API keys (admin).

use async_graphql::{Context, Object, ID};
use contract::{Command, Event, FeeRate, Price};

use crate::auth::{self, Role};
use crate::errors::ApiError;
use crate::schema::answer::{events, NewApiKey};
use crate::schema::input::money;
use crate::schema::types::market::{MarketConfig, MarketConfigInput};
use crate::schema::{parse_account, parse_market, principal, state};

#[derive(Debug, Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Opens a market (admin).
    async fn create_market(
        &self,
        ctx: &Context<'_>,
        market: String,
        tick: String,
        fee_bps: u32,
    ) -> async_graphql::Result<String> {
        principal(ctx)?.require(&[Role::Admin], "creating a market")?;
        let command = Command::CreateMarket {
            market: parse_market(&market)?,
            tick: money("tick", Price::parse(&tick))?,
            fee: money("feeBps", FeeRate::new(u64::from(fee_bps)))?,
        };
        events(state(ctx).engine.submit(command).await?)?;
        Ok(market)
    }

    /// Sets a market's parameters (admin): its charge period, heartbeat timeout, report
    /// interval and the rest. Running leases keep the deadlines already set; every later
    /// one follows the new values. An invalid combination is `VALIDATION` and changes
    /// nothing.
    async fn configure_market(
        &self,
        ctx: &Context<'_>,
        market: String,
        config: MarketConfigInput,
    ) -> async_graphql::Result<MarketConfig> {
        principal(ctx)?.require(&[Role::Admin], "configuring a market")?;
        let market = parse_market(&market)?;
        let config = config.config()?;
        let answer = state(ctx)
            .engine
            .submit(Command::ConfigureMarket { market, config })
            .await?;
        events(answer)?
            .iter()
            .find_map(|e| match e {
                Event::MarketConfigured { market, config } => {
                    Some(MarketConfig::of(*market, config))
                }
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine configured no market").into())
    }

    /// Makes `account` the market's checker (admin): from now on the market sells no node
    /// that account's checks have not passed, and the API's checker loop (run as that
    /// account) tests each node with a known-answer job before its first sale and on a
    /// schedule after. The market's own account cannot be its checker (`RESERVED_ACCOUNT`).
    async fn appoint_checker(
        &self,
        ctx: &Context<'_>,
        market: String,
        account: ID,
    ) -> async_graphql::Result<String> {
        principal(ctx)?.require(&[Role::Admin], "appointing a checker")?;
        let command = Command::AppointChecker {
            market: parse_market(&market)?,
            account: parse_account(Some(&account))?.expect("given"),
        };
        events(state(ctx).engine.submit(command).await?)?;
        Ok(market)
    }

    /// Creates an API key (admin); the key is in the answer only this once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        role: Role,
        account: Option<ID>,
        #[graphql(default)] label: String,
    ) -> async_graphql::Result<NewApiKey> {
        principal(ctx)?.require(&[Role::Admin], "creating keys")?;
        let account = parse_account(account.as_ref())?;
        if label.len() > 200 {
            return Err(ApiError::validation("label: at most 200 bytes").into());
        }
        let (id, key) = state(ctx)
            .db(move |conn| auth::create_key(conn, role, account, &label))
            .await?;
        Ok(NewApiKey { id, key })
    }

    /// Revokes an API key (admin); API processes refuse it within seconds.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "revoking keys")?;
        let id: i64 = id
            .parse()
            .map_err(|_| ApiError::validation(format!("id: not a key id: {:?}", id.as_str())))?;
        if state(ctx)
            .db(move |conn| auth::revoke_key(conn, id))
            .await?
        {
            Ok(true)
        } else {
            Err(ApiError::not_found(format!("no active key {id}")).into())
        }
    }
}
