//! Which bid may trade with which ask, and how many GPUs.
//!
//! These are the only rules of compatibility: the matcher, the explanation of a non-match
//! and the audit of an uncrossed book all call them, so they cannot disagree.

use contract::{AccountId, Exclusion, Interconnect, Region, Timestamp, Vendor};

use crate::book::{AskTerms, BidTerms};

pub(crate) fn vendor_bit(v: Vendor) -> u8 {
    1 << (v as u8)
}

pub(crate) fn interconnect_bit(i: Interconnect) -> u8 {
    1 << (i as u8)
}

/// The first attribute of the ask (of `provider`'s node) that the bid does not accept, at
/// time `now` (ms).
pub(crate) fn attribute_exclusion(
    bid: &BidTerms,
    ask: &AskTerms,
    provider: AccountId,
    now: i64,
) -> Option<Exclusion> {
    if bid.vendor_mask & vendor_bit(ask.vendor) == 0 {
        return Some(Exclusion::Vendor { ask: ask.vendor });
    }
    if ask.vram_gb < bid.min_vram_gb {
        return Some(Exclusion::VramTooLow {
            ask_gb: ask.vram_gb,
            min_gb: bid.min_vram_gb,
        });
    }
    if bid.region_mask & (1u64 << ask.region_bit) == 0 {
        return Some(Exclusion::RegionNotAllowed { ask: ask.region });
    }
    if bid.interconnect_mask & interconnect_bit(ask.interconnect) == 0 {
        return Some(Exclusion::InterconnectNotAllowed {
            ask: ask.interconnect,
        });
    }
    if ask.reputation < bid.min_reputation {
        return Some(Exclusion::ReputationTooLow {
            ask: ask.reputation,
            min: bid.min_reputation,
        });
    }
    let needed_until = now.saturating_add(i64::from(bid.hours) * Timestamp::MS_PER_HOUR);
    if needed_until > ask.available_until {
        return Some(Exclusion::NotAvailableLongEnough {
            available_until: Timestamp(ask.available_until),
            needed_until: Timestamp(needed_until),
        });
    }
    let check = bid.extras.as_ref().and_then(|x| x.check);
    if let Some(extras) = &bid.extras {
        let other_node = check.is_some_and(|n| n.provider != provider || n.node != ask.node);
        if other_node
            || extras
                .exclude
                .iter()
                .any(|n| n.provider == provider && n.node == ask.node)
        {
            return Some(Exclusion::NodeExcluded { node: ask.node });
        }
    }
    if ask.probation && check.is_none() {
        return Some(Exclusion::OnProbation { node: ask.node });
    }
    None
}

/// How many GPUs a bid with `bid_remaining` left takes from an ask with `ask_remaining`.
///
/// A single-node bid takes its whole remainder from one ask. An all-or-none bid may combine
/// asks only on arrival (`bid_is_taker`; the caller checks the total); once resting, one ask
/// must cover it. No lease is smaller than the bid's minimum fill, and no fill leaves a
/// remainder smaller than it (the bid takes less instead), so a remainder can always still
/// be filled.
///
/// Architecture Invariant: an ask that cannot fill a resting bid never becomes able to as
/// the bid fills. The book's "not crossed" invariant rests on this.
pub(crate) fn fill_quantity(
    bid: &BidTerms,
    bid_remaining: u32,
    ask_remaining: u32,
    bid_is_taker: bool,
) -> Result<u32, Exclusion> {
    let whole = bid.single_node || (bid.all_or_none && !bid_is_taker);
    if whole && ask_remaining < bid_remaining {
        return Err(Exclusion::NodeTooSmall {
            ask_gpus: ask_remaining,
            needed: bid_remaining,
        });
    }
    let quantity = if ask_remaining >= bid_remaining {
        bid_remaining
    } else {
        ask_remaining.min(bid_remaining.saturating_sub(bid.min_fill))
    };
    if quantity == 0 || quantity < bid.min_fill.min(bid_remaining) {
        return Err(Exclusion::BelowMinFill {
            ask_gpus: ask_remaining,
            min_fill: bid.min_fill,
        });
    }
    Ok(quantity)
}

/// The region mask admitting every region.
pub(crate) const ANY_REGION: u64 = u64::MAX;

/// Region names interned to bit positions, in first-seen order (part of the state, so a
/// replay assigns the same bits).
pub(crate) const MAX_REGIONS: usize = 64;

pub(crate) fn region_bit(regions: &[Region], region: Region) -> Option<u8> {
    regions.iter().position(|r| *r == region).map(|i| i as u8)
}
