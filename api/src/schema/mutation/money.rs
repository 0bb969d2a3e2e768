//! Money in and out: deposits, withdrawals, payout addresses and settlement batches (the
//! Cosmos bridge drives the admin ones).

use async_graphql::{Context, Object, ID};
use contract::{Amount, ChainAddress, Command, ErrorCode, Event, FailureReason, TxHash};

use crate::auth::Role;
use crate::errors::ApiError;
use crate::schema::answer::{events, money_result, MoneyResult};
use crate::schema::input::{money, parse_batch, parse_idempotency_key};
use crate::schema::types::money::BondChange;
use crate::schema::types::settlement::{ChainDepositResult, SettlementBatch};
use crate::schema::{parse_account, parse_market, principal, six, state};

#[derive(Debug, Default)]
pub struct MoneyMutation;

/// A bond's market and amount: a positive amount of at most six places, else `VALIDATION`.
fn bond_input(market: &str, amount: &str) -> Result<(contract::MarketId, Amount), ApiError> {
    let market = parse_market(market)?;
    let amount = money("amount", Amount::parse(amount))?;
    if !amount.is_positive() {
        return Err(ApiError::validation(format!(
            "amount: a bond amount must be positive (got {amount})"
        )));
    }
    Ok((market, amount))
}

fn tx_hash(s: &str) -> Result<TxHash, ApiError> {
    TxHash::parse(s).map_err(|e| ApiError::validation(format!("txHash: {e}")))
}

#[Object]
impl MoneyMutation {
    /// Sets where the caller's payouts and withdrawals are sent on the settlement chain (a
    /// bech32 address with the chain's prefix).
    async fn set_payout_address(
        &self,
        ctx: &Context<'_>,
        address: String,
    ) -> async_graphql::Result<String> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "setting a payout address")?;
        let account = p.own_account()?;
        let address = ChainAddress::parse(address.trim())
            .map_err(|e| ApiError::validation(format!("address: {e}")))?;
        let st = state(ctx);
        if let Some(escrow) = &st.config.escrow_address {
            let prefix = escrow.rsplit_once('1').map_or("", |(hrp, _)| hrp);
            if address.prefix() != prefix {
                return Err(ApiError::validation(format!(
                    "address: {address} is not an address of the settlement chain (prefix {prefix})"
                ))
                .into());
            }
        }
        events(
            st.engine
                .submit(Command::SetPayoutAddress {
                    account,
                    address: address.clone(),
                })
                .await?,
        )?;
        Ok(address.to_string())
    }

    /// Moves `amount` of the caller's available balance to settling; the next settlement
    /// batch sends it to the caller's payout address. With an `idempotencyKey` (a decimal
    /// below 2^128 or a UUID, unique per account for deposits and withdrawals together), a
    /// retry with the same key and amount moves nothing and answers the first result with
    /// `replayed: true`; the same key with another amount is `IDEMPOTENCY_KEY_REUSED`.
    /// Without one, every request is a new withdrawal: bots should always pass a key.
    async fn request_withdrawal(
        &self,
        ctx: &Context<'_>,
        amount: String,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<MoneyResult> {
        let p = principal(ctx)?;
        p.require(&[Role::Trader, Role::Provider], "withdrawing")?;
        let account = p.own_account()?;
        let amount = money("amount", Amount::parse(&amount))?;
        let command = match idempotency_key.as_deref().map(parse_idempotency_key) {
            None => Command::RequestWithdrawal { account, amount },
            Some(key) => Command::RequestWithdrawalOnce {
                account,
                amount,
                key: key?,
            },
        };
        let answer = state(ctx).engine.submit(command).await?;
        Ok(money_result(answer, account, amount)?)
    }

    /// Posts `amount` (a positive decimal, at most six places) of the caller's available
    /// balance as bond in `market`. Each ask placed there holds the market's bond per GPU
    /// from the free bond while its GPUs are offered or leased; a provider failure slashes
    /// the market's share of the bond behind the failed lease's GPUs.
    async fn post_bond(
        &self,
        ctx: &Context<'_>,
        market: String,
        amount: String,
    ) -> async_graphql::Result<BondChange> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "posting bond")?;
        let provider = p.own_account()?;
        let (market, amount) = bond_input(&market, &amount)?;
        let answer = state(ctx)
            .engine
            .submit(Command::PostBond {
                provider,
                market,
                amount,
            })
            .await?;
        events(answer)?;
        Ok(BondChange {
            market: market.to_string(),
            amount: six(amount.to_decimal()),
            release_at: None,
        })
    }

    /// Withdraws `amount` of the caller's free bond in `market`: it leaves the bond now and
    /// becomes available after the market's unbonding delay (`releaseAt`), so a bond cannot
    /// be pulled just before a failure it answers for. More than the free bond (bond held
    /// behind offered or leased GPUs is not free) is `INSUFFICIENT_BOND`.
    async fn withdraw_bond(
        &self,
        ctx: &Context<'_>,
        market: String,
        amount: String,
    ) -> async_graphql::Result<BondChange> {
        let p = principal(ctx)?;
        p.require(&[Role::Provider], "withdrawing bond")?;
        let provider = p.own_account()?;
        let (market, amount) = bond_input(&market, &amount)?;
        let answer = state(ctx)
            .engine
            .submit(Command::WithdrawBond {
                provider,
                market,
                amount,
            })
            .await?;
        let release_at = events(answer)?.into_iter().find_map(|e| match e {
            Event::BondUnbonding { release_at, .. } => {
                chrono::DateTime::from_timestamp_millis(release_at.0)
            }
            _ => None,
        });
        Ok(BondChange {
            market: market.to_string(),
            amount: six(amount.to_decimal()),
            release_at,
        })
    }

    /// Credits an account (admin; the Cosmos bridge does this for on-chain deposits). With
    /// an `idempotencyKey` (a decimal below 2^128 or a UUID, unique per credited account), a
    /// retry after a timeout with the same key and amount credits nothing and answers the
    /// first result with `replayed: true`; the same key with another amount is
    /// `IDEMPOTENCY_KEY_REUSED`. Without one, every request credits again: pass a key.
    async fn credit_deposit(
        &self,
        ctx: &Context<'_>,
        account: ID,
        amount: String,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<MoneyResult> {
        principal(ctx)?.require(&[Role::Admin], "crediting a deposit")?;
        let account = parse_account(Some(&account))?.expect("given");
        let amount = money("amount", Amount::parse(&amount))?;
        let command = match idempotency_key.as_deref().map(parse_idempotency_key) {
            None => Command::Deposit { account, amount },
            Some(key) => Command::DepositOnce {
                account,
                amount,
                key: key?,
            },
        };
        let answer = state(ctx).engine.submit(command).await?;
        Ok(money_result(answer, account, amount)?)
    }

    /// Credits a final chain transfer to the account its memo named (admin: the Cosmos
    /// bridge). A (transaction, message) already credited answers `duplicate` and changes
    /// nothing, so the bridge may retry freely.
    async fn credit_chain_deposit(
        &self,
        ctx: &Context<'_>,
        account: ID,
        amount: String,
        tx_hash: String,
        msg_index: u32,
    ) -> async_graphql::Result<ChainDepositResult> {
        principal(ctx)?.require(&[Role::Admin], "crediting a chain deposit")?;
        let account = parse_account(Some(&account))?.expect("given");
        let amount = money("amount", Amount::parse(&amount))?;
        let tx_hash = self::tx_hash(&tx_hash)?;
        let answer = state(ctx)
            .engine
            .submit(Command::ChainDeposit {
                account,
                amount,
                tx_hash,
                msg_index,
            })
            .await?;
        let duplicate = match events(answer) {
            Ok(_) => false,
            Err(e) if e.code == ErrorCode::DuplicateDeposit => true,
            Err(e) => return Err(e.into()),
        };
        Ok(ChainDepositResult {
            account: account.0,
            amount: six(amount.to_decimal()),
            duplicate,
        })
    }

    /// Opens a settlement batch (admin: the Cosmos bridge): requested withdrawals and unpaid
    /// earnings of at least `minPayout`, at most `maxPayouts` accounts.
    async fn open_settlement(
        &self,
        ctx: &Context<'_>,
        min_payout: String,
        #[graphql(default = 100)] max_payouts: u32,
    ) -> async_graphql::Result<SettlementBatch> {
        principal(ctx)?.require(&[Role::Admin], "opening a settlement")?;
        let min_payout = money("minPayout", Amount::parse(&min_payout))?;
        let answer = state(ctx)
            .engine
            .submit(Command::OpenSettlement {
                min_payout,
                max_payouts,
            })
            .await?;
        events(answer)?
            .iter()
            .find_map(|e| match e {
                Event::SettlementOpened { batch, payouts } => {
                    Some(SettlementBatch::new(Some(*batch), payouts))
                }
                _ => None,
            })
            .ok_or_else(|| ApiError::internal("the engine opened no batch").into())
    }

    /// The batch's transaction is included with success at `height` (admin: the bridge).
    async fn confirm_settlement(
        &self,
        ctx: &Context<'_>,
        batch: ID,
        tx_hash: String,
        height: u64,
    ) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "confirming a settlement")?;
        let batch = parse_batch(&batch)?;
        let tx_hash = self::tx_hash(&tx_hash)?;
        events(
            state(ctx)
                .engine
                .submit(Command::ConfirmSettlement {
                    batch,
                    tx_hash,
                    height,
                })
                .await?,
        )?;
        Ok(true)
    }

    /// The batch's transaction failed for good (admin: the bridge); its amounts go back.
    async fn fail_settlement(
        &self,
        ctx: &Context<'_>,
        batch: ID,
        reason: String,
    ) -> async_graphql::Result<bool> {
        principal(ctx)?.require(&[Role::Admin], "failing a settlement")?;
        let batch = parse_batch(&batch)?;
        let reason = FailureReason::new(&reason)
            .map_err(|e| ApiError::validation(format!("reason: {e}")))?;
        events(
            state(ctx)
                .engine
                .submit(Command::FailSettlement { batch, reason })
                .await?,
        )?;
        Ok(true)
    }
}
