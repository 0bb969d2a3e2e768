//! Re-bid chains: a lease whose provider failed → the order the engine placed for its unused
//! hours → the leases that order filled → their own failures and re-bids.

use contract::{ErrorCode, LeaseEndReason, LeaseId, LeaseState, OrderId};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::{parsed, unsigned, Key};
use crate::LedgerError;

/// One lease of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLease {
    pub key: Key,
    pub lease: LeaseId,
    /// The order it filled: for every lease after the first, the re-bid of a failed one.
    pub bid_order: OrderId,
    /// 0 for the lease asked about, one more for each re-bid on the way to this one.
    pub depth: u32,
    pub state: LeaseState,
    pub end_reason: Option<LeaseEndReason>,
    /// Why it closed, as the engine judged it (`LeaseEndCause::as_str`, e.g. `node_silent`).
    pub close_cause: Option<String>,
    /// The order its failure placed.
    pub rebid_order: Option<OrderId>,
    /// Why the re-bid its failure asked for was refused.
    pub rebid_refused: Option<ErrorCode>,
}

/// `lease` and every lease its failures' re-bids filled, by depth, then by lease; empty for
/// an unknown lease.
pub fn rebid_chain(conn: &mut PgConnection, lease: Key) -> Result<Vec<ChainLease>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        partition: i32,
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
        #[diesel(sql_type = BigInt)]
        bid_order: i64,
        #[diesel(sql_type = Integer)]
        depth: i32,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Nullable<Text>)]
        end_reason: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        close_cause: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        rebid_order: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        rebid_refused: Option<String>,
    }
    const T: &str = "leases";
    // A re-bid is placed once per failed lease and fills new leases only, so the chain is a
    // tree and the recursion ends.
    let rows: Vec<Row> = diesel::sql_query(
        "WITH RECURSIVE chain AS ( \
           SELECT partition, lease_id, bid_order, 0 AS depth, status, end_reason, close_cause, \
             rebid_order, rebid_refused \
           FROM leases WHERE partition = $1 AND lease_id = $2 \
           UNION ALL \
           SELECT n.partition, n.lease_id, n.bid_order, c.depth + 1, n.status, n.end_reason, \
             n.close_cause, n.rebid_order, n.rebid_refused \
           FROM chain c JOIN leases n ON n.partition = c.partition AND n.bid_order = c.rebid_order \
         ) SELECT * FROM chain ORDER BY depth, lease_id",
    )
    .bind::<Integer, _>(lease.partition)
    .bind::<BigInt, _>(lease.id)
    .load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(ChainLease {
                key: Key {
                    partition: r.partition,
                    id: r.lease_id,
                },
                lease: LeaseId(unsigned(T, "lease_id", r.lease_id)?),
                bid_order: OrderId(unsigned(T, "bid_order", r.bid_order)?),
                depth: unsigned(T, "depth", r.depth)?,
                state: parsed(T, "status", &r.status)?,
                end_reason: r
                    .end_reason
                    .map(|e| parsed(T, "end_reason", &e))
                    .transpose()?,
                close_cause: r.close_cause,
                rebid_order: r
                    .rebid_order
                    .map(|o| unsigned(T, "rebid_order", o).map(OrderId))
                    .transpose()?,
                rebid_refused: r
                    .rebid_refused
                    .map(|c| parsed(T, "rebid_refused", &c))
                    .transpose()?,
            })
        })
        .collect()
}

/// The lease whose failure placed `order` as its re-bid, if one did.
pub fn rebid_of(conn: &mut PgConnection, order: Key) -> Result<Option<Key>, LedgerError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        lease_id: i64,
    }
    let row: Option<Row> =
        diesel::sql_query("SELECT lease_id FROM leases WHERE partition = $1 AND rebid_order = $2")
            .bind::<Integer, _>(order.partition)
            .bind::<BigInt, _>(order.id)
            .get_result(conn)
            .optional()?;
    Ok(row.map(|r| Key {
        partition: order.partition,
        id: r.lease_id,
    }))
}
