//! Scores reach the engine. The reputation projection computes each provider's score from
//! the log (the formula is in `ledger::reputation`); this task sends every score the engine
//! does not hold yet as a `SetReputation` command, so an ask advertises what its provider
//! earned and a bid's `minReputation` fills against it.
//!
//! One task per shard, in the API that also ticks the engine's clock. The command carries
//! the absolute score, so sending one again (after a restart, or because the replica had
//! not caught up with the last one) changes nothing; the engine, replaying its log, meets
//! the same commands in the same order, so scores in matching are deterministic.

use std::sync::Arc;
use std::time::Duration;

use contract::{AccountId, Command, Reputation};
use tracing::{debug, warn};

use crate::errors::ApiError;
use crate::schema::answer::events;
use crate::AppState;

/// Scores read per database round trip.
const PAGE: u32 = 500;

/// Publishes scores every `every`, until the API stops.
pub async fn publish(state: Arc<AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        match publish_once(&state).await {
            Ok(0) => {}
            Ok(sent) => debug!(sent, "reputation scores sent to the engine"),
            Err(e) => warn!(error = %e.message, "publishing reputation scores"),
        }
    }
}

/// Sends each score the projection holds and the engine does not; returns how many.
pub async fn publish_once(state: &AppState) -> Result<usize, ApiError> {
    let mut after: Option<AccountId> = None;
    let mut sent = 0;
    loop {
        let page = state
            .db(move |c| ledger::read::providers(c, after, 0, PAGE))
            .await?;
        let changed: Vec<(AccountId, Reputation)> = {
            let engine = state.engine.replica();
            page.rows
                .iter()
                .filter_map(|p| {
                    // The projection keeps scores in 0..=1000, as `Reputation` does.
                    let score = Reputation::new(u64::from(p.score)).ok()?;
                    (engine.reputation(p.account) != score).then_some((p.account, score))
                })
                .collect()
        };
        for (provider, score) in changed {
            events(
                state
                    .engine
                    .submit(Command::SetReputation { provider, score })
                    .await?,
            )?;
            sent += 1;
        }
        match (page.more, page.rows.last()) {
            (true, Some(last)) => after = Some(last.account),
            _ => return Ok(sent),
        }
    }
}
