//! Usage in the FOCUS format (the FinOps Foundation's FinOps Open Cost and Usage
//! Specification), version 1.2: one row per usage line, so a running lease shows in every
//! charge period it has accrued.
//!
//! Every Mandatory column of FOCUS 1.2 is filled with its type (decimals, UTC date-times as
//! `YYYY-MM-DDTHH:mm:ssZ`, strings, JSON objects) and never null, and so are the Conditional
//! and Recommended ones that apply to a GPU market (consumed quantity, unit prices, region,
//! resource, SKU, invoice id). The market has no discounts or commitments: list, contracted,
//! effective and billed cost are the one amount the engine charged for the period, and the
//! commitment columns are null.
//!
//! # Rounding
//!
//! Every cost column holds an amount the engine computed and the ledger stored, never one
//! recomputed here, and every one of them follows the one rule of `contract::market`: a
//! row's charge is `floor(ListUnitPrice × x_Gpus × (x_UsageEnd − x_UsageStart) in ms ÷
//! 3,600,000)` to the micro-unit (six places), its fee (`x_MarketFee`) is `floor(charge ×
//! fee_bps ÷ 10,000)` to the micro-unit, and the provider's share (`x_ProviderEarned`) is
//! the charge less the fee. `x_UsageStart`/`x_UsageEnd` carry milliseconds so that anyone
//! can apply the rule to the file. Quantities (`ConsumedQuantity`, `PricingQuantity`) are the
//! charged GPU-hours rounded down to six places, for reading: `ListUnitPrice ×
//! PricingQuantity` can fall short of `ListCost` by the quantity's rounding, and the cost is
//! the one the rule gives.
//!
//! The FinOps Foundation's validator (`focus-validator` 1.0.0) still checks the names its
//! rules had before FOCUS 1.0 (`ChargeType`, `InvoiceIssuer`, `Provider`, `Publisher`,
//! `ResourceID`), so those columns repeat their 1.2 counterparts, and it requires the
//! commitment discount and sub-account columns, which are present and null. The file states
//! its version in `x_FocusVersion`; the `x_` columns after it are the market's own.

use std::io::Write;

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;

use super::{csv_error, Granularity, Period, PAGE};
use crate::read::{self, UsageFilter, UsageLine};
use crate::LedgerError;

/// The FOCUS version the export conforms to.
pub const FOCUS_VERSION: &str = "1.2";

/// One usage line as the export sees it.
struct Row<'a> {
    line: &'a UsageLine,
    currency: &'a str,
}

type Cell = fn(&Row<'_>) -> String;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The charged time's bounds, to the millisecond the engine charged by.
fn iso_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn billing_start(row: &Row<'_>) -> DateTime<Utc> {
    row.line
        .month
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

fn null(_: &Row<'_>) -> String {
    String::new()
}

fn cost(row: &Row<'_>) -> String {
    row.line.amount.to_string()
}

fn unit_price(row: &Row<'_>) -> String {
    row.line.unit_price.to_string()
}

fn gpu_hours(row: &Row<'_>) -> String {
    row.line.gpu_hours.to_string()
}

fn gpu_hours_unit(_: &Row<'_>) -> String {
    "GPU-Hours".to_owned()
}

fn usage(_: &Row<'_>) -> String {
    "Usage".to_owned()
}

fn market_name(_: &Row<'_>) -> String {
    "gpumarket".to_owned()
}

fn publisher(row: &Row<'_>) -> String {
    format!("provider {}", row.line.provider)
}

fn region(row: &Row<'_>) -> String {
    row.line.region.to_string()
}

fn resource_id(row: &Row<'_>) -> String {
    format!("lease/{}/{}", row.line.key.partition, row.line.lease)
}

/// Every column, in the file's order, with how a usage line fills it.
const COLUMNS: [(&str, Cell); 61] = [
    ("BilledCost", cost),
    ("BillingAccountId", |r| format!("account/{}", r.line.buyer)),
    ("BillingAccountName", |r| {
        format!("account {}", r.line.buyer)
    }),
    ("BillingCurrency", |r| r.currency.to_owned()),
    ("BillingPeriodEnd", |r| {
        iso(Granularity::Month.next(billing_start(r)))
    }),
    ("BillingPeriodStart", |r| iso(billing_start(r))),
    ("ChargeCategory", usage),
    // Only a correction of an invoiced period has a class.
    ("ChargeClass", null),
    ("ChargeDescription", |r| {
        format!(
            "{} {} GPUs on node {} at {} per GPU-hour",
            r.line.gpus, r.line.market, r.line.node, r.line.unit_price
        )
    }),
    ("ChargeFrequency", |_| "Usage-Based".to_owned()),
    ("ChargePeriodEnd", |r| iso(r.line.charge_end)),
    ("ChargePeriodStart", |r| iso(r.line.charge_start)),
    ("CommitmentDiscountCategory", null),
    ("CommitmentDiscountId", null),
    ("CommitmentDiscountName", null),
    ("CommitmentDiscountStatus", null),
    ("CommitmentDiscountType", null),
    ("ConsumedQuantity", gpu_hours),
    ("ConsumedUnit", gpu_hours_unit),
    ("ContractedCost", cost),
    ("ContractedUnitPrice", unit_price),
    ("EffectiveCost", cost),
    ("InvoiceId", |r| {
        format!("invoice/{}/{}", r.line.buyer, r.line.month.format("%Y-%m"))
    }),
    ("InvoiceIssuerName", market_name),
    ("ListCost", cost),
    ("ListUnitPrice", unit_price),
    // The price is the order book's.
    ("PricingCategory", |_| "Dynamic".to_owned()),
    ("PricingQuantity", gpu_hours),
    ("PricingUnit", gpu_hours_unit),
    ("ProviderName", market_name),
    ("PublisherName", publisher),
    ("RegionId", region),
    ("RegionName", region),
    ("ResourceId", resource_id),
    ("ResourceName", |r| {
        format!("{} x{} on {}", r.line.market, r.line.gpus, r.line.node)
    }),
    ("ResourceType", |_| "GPU Lease".to_owned()),
    ("ServiceCategory", |_| "Compute".to_owned()),
    ("ServiceName", |_| "GPU compute".to_owned()),
    ("ServiceSubcategory", |_| "Other (Compute)".to_owned()),
    ("SkuId", |r| r.line.market.to_string()),
    ("SkuMeter", |_| "GPU time".to_owned()),
    // Numeric properties are per pricing unit: one GPU-hour is one GPU.
    ("SkuPriceDetails", |r| {
        serde_json::json!({ "F_GpuCount": 1, "GpuClass": r.line.market.as_str() }).to_string()
    }),
    ("SkuPriceId", |r| {
        format!("{}@{}", r.line.market, r.line.unit_price)
    }),
    ("SubAccountId", null),
    ("SubAccountName", null),
    ("Tags", |r| {
        serde_json::json!({
            "gpumarket/provider": r.line.provider.to_string(),
            "gpumarket/node": r.line.node.as_str(),
        })
        .to_string()
    }),
    // The names focus-validator 1.0.0 checks.
    ("ChargeType", usage),
    ("InvoiceIssuer", market_name),
    ("Provider", market_name),
    ("Publisher", publisher),
    ("ResourceID", resource_id),
    ("x_FocusVersion", |_| FOCUS_VERSION.to_owned()),
    ("x_Gpus", |r| r.line.gpus.to_string()),
    ("x_UsageStart", |r| iso_ms(r.line.usage_start)),
    ("x_UsageEnd", |r| iso_ms(r.line.usage_end)),
    ("x_MarketFee", |r| r.line.fee.to_string()),
    ("x_ProviderEarned", |r| r.line.provider_earned.to_string()),
    // Empty while the line is accrued revenue: its lease's money has not moved yet.
    ("x_SettledAt", |r| {
        r.line.settled_at.map(iso).unwrap_or_default()
    }),
    ("x_LeaseEndReason", |r| {
        r.line
            .end_reason
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default()
    }),
    ("x_EventSeq", |r| r.line.event_seq.to_string()),
    ("x_CommandOffset", |r| r.line.command_offset.to_string()),
];

/// The export's header, in order.
pub const FOCUS_COLUMNS: [&str; COLUMNS.len()] = {
    let mut names = [""; COLUMNS.len()];
    let mut i = 0;
    while i < COLUMNS.len() {
        names[i] = COLUMNS[i].0;
        i += 1;
    }
    names
};

/// Writes the usage lines whose charge period starts in `period` in the FOCUS format;
/// returns the number of rows. `currency` is the ISO 4217 code of the market's unit (e.g.
/// `USD` for a USDC market).
///
/// A lease is one resource (`ResourceId` = `lease/<partition>/<lease id>`), priced per
/// GPU-hour at the price it traded at; a row is its usage in one charge period
/// (`ChargePeriodStart/End`), billed on the buyer's invoice of that period's month
/// (`BillingPeriodStart/End`, `InvoiceId`).
pub fn focus_csv(
    conn: &mut PgConnection,
    period: Period,
    currency: &str,
    out: impl Write,
) -> Result<u64, LedgerError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(FOCUS_COLUMNS).map_err(csv_error)?;
    let filter = UsageFilter {
        buyer: None,
        from: period.from(),
        to: period.to(),
    };
    let mut after = None;
    let mut written = 0u64;
    loop {
        let page = read::usage_lines(conn, &filter, after, PAGE)?;
        for line in &page.rows {
            let row = Row { line, currency };
            csv.write_record(COLUMNS.iter().map(|(_, cell)| cell(&row)))
                .map_err(csv_error)?;
        }
        written += page.rows.len() as u64;
        match page.rows.last() {
            Some(last) if page.more => after = Some(last.usage_key()),
            _ => break,
        }
    }
    csv.flush()?;
    Ok(written)
}
