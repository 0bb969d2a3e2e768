//! Conversions from the contract's types to column values, shared by the projections. Each
//! refuses a value its column cannot hold instead of wrapping or truncating it.

use chrono::{DateTime, Datelike, Utc};
use contract::{Amount, Price};
use rust_decimal::Decimal;

use crate::projector::Refusal;
use crate::LedgerError;

/// `Amount` and `Price` count micro-units: six decimal places, the scale of the numeric
/// columns.
pub(crate) const MICROS_SCALE: u32 = 6;

pub(crate) fn fit(what: &'static str, value: u64) -> Result<i64, Refusal> {
    i64::try_from(value).map_err(|_| Refusal::OutOfRange {
        what,
        value: value.into(),
    })
}

pub(crate) fn fit_i32(what: &'static str, value: impl Into<u64>) -> Result<i32, Refusal> {
    let value: u64 = value.into();
    i32::try_from(value).map_err(|_| Refusal::OutOfRange {
        what,
        value: value.into(),
    })
}

/// Postgres keeps timestamps from 4713 BC; chrono's range reaches further back. Years 1 to
/// 9999 fit both and any real event.
pub(crate) fn timestamp(millis: i64) -> Result<DateTime<Utc>, Refusal> {
    DateTime::from_timestamp_millis(millis)
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or(Refusal::OutOfRange {
            what: "timestamp (ms)",
            value: millis.into(),
        })
}

pub(crate) fn amount(a: Amount) -> Decimal {
    Decimal::new(a.micros(), MICROS_SCALE)
}

pub(crate) fn price(p: Price) -> Decimal {
    Decimal::new(p.micros(), MICROS_SCALE)
}

/// A sum of micro-units (which may exceed i64 over many events) as a numeric value.
pub(crate) fn micros_sum(micros: i128) -> Result<Decimal, LedgerError> {
    Decimal::try_from_i128_with_scale(micros, MICROS_SCALE).map_err(|_| LedgerError::OutOfRange {
        what: "sum of amounts",
        value: micros,
    })
}

/// `a + b` for a counter kept in Rust (a count or milliseconds), refused when it leaves its
/// column's type: a log written by hand can hold more than any real history.
pub(crate) fn checked_sum<T>(what: &'static str, a: T, b: T) -> Result<T, LedgerError>
where
    T: Into<i128> + TryFrom<i128>,
{
    let value = a.into() + b.into();
    T::try_from(value).map_err(|_| LedgerError::OutOfRange { what, value })
}
