//! The mutation root: every mutation that changes market state is one or more engine
//! commands, split by what they act on. Validation, authentication and role checks come
//! first, so a refused request appends nothing.

mod admin;
mod leases;
mod money;
mod nodes;
mod orders;

pub(crate) use leases::require_held;
pub(crate) use orders::first_answer_events;

use async_graphql::MergedObject;

#[derive(Debug, Default, MergedObject)]
pub struct Mutation(
    orders::OrderMutation,
    leases::LeaseMutation,
    nodes::NodeMutation,
    money::MoneyMutation,
    admin::AdminMutation,
    crate::schema::blobs::BlobMutation,
    crate::schema::render::RenderMutation,
);
