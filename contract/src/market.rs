//! A market's parameters ([`MarketConfig`]) and the one rule by which a lease's time becomes
//! money.
//!
//! # The charging rule
//!
//! A lease is charged per millisecond of engine-seen time, never by a number anyone states.
//! Its time is cut into intervals at charge-period boundaries; each interval `[a, b)` is
//! charged on its own, rounded down to the micro-unit:
//!
//! ```text
//! charge(a, b) = floor(price_micros × gpus × (b − a)_ms / 3,600,000)      (Price::charge_for)
//! fee          = floor(charge × fee_bps / 10,000)                         (FeeRate::fee_on)
//! provider     = charge − fee
//! ```
//!
//! A lease's totals are the sums over its intervals, so what the buyer pays, the market's fee
//! and the provider's earnings equal the sums of the rows the ledger shows per period; the
//! rounding leaves at most one micro-unit per interval with the buyer. `hours_used` in a
//! lease's end is the charged milliseconds in hours, rounded down to six places
//! ([`hours_of_ms`]), for display only.

use std::ops::Deref;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Amount, MarketId, Rejection, ShortText, Timestamp};

/// Why a market's parameters are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a charge period is 1 to 86,400 seconds and divides a day (got {seconds})")]
    ChargePeriod { seconds: u32 },
    #[error("{what} must be at least one millisecond")]
    ZeroDuration { what: &'static str },
    #[error("the heartbeat timeout ({timeout_ms} ms) must be at least the report interval ({interval_ms} ms)")]
    TimeoutBelowInterval { timeout_ms: u32, interval_ms: u32 },
    #[error("the bond per GPU must not be negative (got {bond})")]
    NegativeBond { bond: Amount },
    #[error("the slash share is at most 10,000 basis points (got {bps})")]
    SlashShare { bps: u16 },
    #[error("at most {max} model names map to one class")]
    TooManyModelNames { max: usize },
}

/// The length of a market's charge period: whole seconds that divide a day.
///
/// Periods start at whole multiples of the length since the Unix epoch, which UTC midnight
/// is (Unix time has no leap seconds), so no period crosses a day, and therefore no month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ChargePeriod(u32);

const DAY_S: u32 = 86_400;

impl ChargePeriod {
    pub const HOUR: ChargePeriod = ChargePeriod(3_600);

    pub fn new(seconds: u32) -> Result<Self, ConfigError> {
        if seconds == 0 || seconds > DAY_S || !DAY_S.is_multiple_of(seconds) {
            return Err(ConfigError::ChargePeriod { seconds });
        }
        Ok(ChargePeriod(seconds))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    pub fn ms(self) -> i64 {
        i64::from(self.0) * 1_000
    }

    /// The start of the period holding `t`.
    pub fn start_of(self, t: Timestamp) -> Timestamp {
        Timestamp(t.0 - t.0.rem_euclid(self.ms()))
    }

    /// The end of the period holding `t` (the start of the next one).
    pub fn end_of(self, t: Timestamp) -> Timestamp {
        Timestamp(self.start_of(t).0.saturating_add(self.ms()))
    }
}

impl TryFrom<u32> for ChargePeriod {
    type Error = ConfigError;
    fn try_from(seconds: u32) -> Result<Self, ConfigError> {
        ChargePeriod::new(seconds)
    }
}

impl From<ChargePeriod> for u32 {
    fn from(p: ChargePeriod) -> u32 {
        p.0
    }
}

/// A market's parameters as plain fields; [`MarketConfig::new`] checks them. The defaults
/// are what a market has until a `ConfigureMarket` command sets others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketConfigFields {
    /// Usage accrues per period of this length (default one hour).
    pub charge_period: ChargePeriod,
    /// How often a node's agent should send its signed report (default 10 s). The engine
    /// does not use it; the API tells agents.
    pub report_interval_ms: u32,
    /// A node whose reports stop for longer than this is silent: its leases fail and its
    /// asks are withdrawn (default 30 s, three report intervals). It also delays each
    /// period's accrual, which is final once every node could have reported past the
    /// period's end.
    pub heartbeat_timeout_ms: u32,
    /// Whether simulated GPUs may serve this market (default false).
    pub simulated: bool,
    /// The bond a provider posts per offered GPU (default 0, no bond).
    pub bond_per_gpu: Amount,
    /// The share of the bond behind a failed lease's GPUs that a provider failure slashes,
    /// in basis points (default 2,500: a quarter).
    pub slash_share_bps: u16,
    /// How long a provider's released bond stays bonded before it can be withdrawn
    /// (default seven days).
    pub unbonding_delay_ms: u64,
    /// How far a signed report's own time may lie from the engine's clock (default five
    /// minutes).
    pub report_clock_window_ms: u32,
    /// The GPU model names (as NVML or ROCm SMI report them) that are this market's class;
    /// empty by default (at most [`MarketConfig::MAX_MODEL_NAMES`]).
    pub model_names: Vec<ShortText>,
}

impl Default for MarketConfigFields {
    fn default() -> Self {
        MarketConfigFields {
            charge_period: ChargePeriod::HOUR,
            report_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            simulated: false,
            bond_per_gpu: Amount::ZERO,
            slash_share_bps: 2_500,
            unbonding_delay_ms: 7 * 24 * 3_600_000,
            report_clock_window_ms: 300_000,
            model_names: Vec::new(),
        }
    }
}

/// A market's checked parameters; read them through [`Deref`] (`config.heartbeat_timeout_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "MarketConfigFields", into = "MarketConfigFields")]
pub struct MarketConfig(MarketConfigFields);

impl MarketConfig {
    pub const MAX_MODEL_NAMES: usize = 64;

    pub fn new(fields: MarketConfigFields) -> Result<Self, ConfigError> {
        for (what, ms) in [
            ("the report interval", fields.report_interval_ms),
            ("the heartbeat timeout", fields.heartbeat_timeout_ms),
            ("the report clock window", fields.report_clock_window_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::ZeroDuration { what });
            }
        }
        if fields.heartbeat_timeout_ms < fields.report_interval_ms {
            return Err(ConfigError::TimeoutBelowInterval {
                timeout_ms: fields.heartbeat_timeout_ms,
                interval_ms: fields.report_interval_ms,
            });
        }
        if fields.bond_per_gpu.micros() < 0 {
            return Err(ConfigError::NegativeBond {
                bond: fields.bond_per_gpu,
            });
        }
        if fields.slash_share_bps > 10_000 {
            return Err(ConfigError::SlashShare {
                bps: fields.slash_share_bps,
            });
        }
        if fields.model_names.len() > Self::MAX_MODEL_NAMES {
            return Err(ConfigError::TooManyModelNames {
                max: Self::MAX_MODEL_NAMES,
            });
        }
        Ok(MarketConfig(fields))
    }

    /// Whether a node's report may reach `market` (this config's) at `now`: simulated GPUs
    /// only where the market was created as simulated, and the report's own time within
    /// the window around the market's clock. The API checks it before appending a report,
    /// the engine again when it applies one.
    pub fn admits_report(
        &self,
        market: MarketId,
        simulated: bool,
        reported_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        if simulated && !self.0.simulated {
            return Err(Rejection::SimulatedReport { market });
        }
        if reported_at.0.abs_diff(now.0) > u64::from(self.0.report_clock_window_ms) {
            return Err(Rejection::ReportClockSkew {
                reported_at,
                now,
                window_ms: self.0.report_clock_window_ms,
            });
        }
        Ok(())
    }

    /// The heartbeat timeout in milliseconds, as the engine's clock counts.
    pub fn heartbeat_timeout(&self) -> i64 {
        i64::from(self.0.heartbeat_timeout_ms)
    }
}

impl Deref for MarketConfig {
    type Target = MarketConfigFields;
    fn deref(&self) -> &MarketConfigFields {
        &self.0
    }
}

impl TryFrom<MarketConfigFields> for MarketConfig {
    type Error = ConfigError;
    fn try_from(fields: MarketConfigFields) -> Result<Self, ConfigError> {
        MarketConfig::new(fields)
    }
}

impl From<MarketConfig> for MarketConfigFields {
    fn from(config: MarketConfig) -> MarketConfigFields {
        config.0
    }
}

/// Charged milliseconds as hours, rounded down to six decimal places: the `hours_used` a
/// lease's end shows (for display; the money is in its amounts).
pub fn hours_of_ms(ms: u64) -> Decimal {
    // A micro-hour is 3.6 ms; u64 milliseconds × 10 fits u128 exactly.
    let micro_hours = u128::from(ms) * 10 / 36;
    Decimal::from_i128_with_scale(micro_hours as i128, 6).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeeRate, Gpus, Price};

    #[test]
    fn periods_divide_a_day_and_align_to_utc() {
        for bad in [0, 7, 86_401, 3_601] {
            assert!(ChargePeriod::new(bad).is_err(), "{bad}");
        }
        let hour = ChargePeriod::HOUR;
        // 2026-01-31T23:59:59.999Z, then the first millisecond of February.
        let last = Timestamp(1_769_903_999_999);
        assert_eq!(hour.end_of(last), Timestamp(1_769_904_000_000));
        assert_eq!(
            hour.start_of(Timestamp(1_769_904_000_000)),
            Timestamp(1_769_904_000_000)
        );
        let day = ChargePeriod::new(86_400).unwrap();
        assert_eq!(day.end_of(last), Timestamp(1_769_904_000_000));
        assert_eq!(
            ChargePeriod::new(60).unwrap().start_of(Timestamp(-1)),
            Timestamp(-60_000)
        );
    }

    #[test]
    fn configs_are_checked_and_defaults_are_documented() {
        let config = MarketConfig::default();
        assert_eq!(config.heartbeat_timeout_ms, 3 * config.report_interval_ms);
        assert_eq!(config.charge_period, ChargePeriod::HOUR);
        let short = MarketConfigFields {
            heartbeat_timeout_ms: 5_000,
            ..MarketConfigFields::default()
        };
        assert!(matches!(
            MarketConfig::new(short),
            Err(ConfigError::TimeoutBelowInterval { .. })
        ));
        let negative = MarketConfigFields {
            bond_per_gpu: Amount::from_micros(-1),
            ..MarketConfigFields::default()
        };
        assert!(MarketConfig::new(negative).is_err());
        // A decoded config is checked like a constructed one.
        let json = serde_json::to_value(MarketConfig::default()).unwrap();
        let mut bad = json.clone();
        bad["charge_period"] = 7.into();
        assert!(serde_json::from_value::<MarketConfig>(bad).is_err());
        assert_eq!(
            serde_json::from_value::<MarketConfig>(json).unwrap(),
            MarketConfig::default()
        );
    }

    #[test]
    fn the_rule_rounds_each_interval_down_once() {
        let price = Price::parse("2.50").unwrap();
        let gpus = Gpus::new(4).unwrap();
        // 2.50 × 4 GPUs × 1 h.
        assert_eq!(
            price.charge_for(gpus, 3_600_000),
            Some(Amount::parse("10").unwrap())
        );
        // One millisecond of 10 per hour is 2.77… micro-units: 2.
        assert_eq!(price.charge_for(gpus, 1), Some(Amount::from_micros(2)));
        assert_eq!(price.charge_for(gpus, 0), Some(Amount::ZERO));
        assert_eq!(
            Price::from_micros(i64::MAX).charge_for(Gpus::MAX, u64::MAX),
            None
        );
        let fee = FeeRate::new(1_000).unwrap();
        assert_eq!(fee.fee_on(Amount::from_micros(19)), Amount::from_micros(1));
        assert_eq!(hours_of_ms(5_400_000), "1.5".parse::<Decimal>().unwrap());
        assert_eq!(hours_of_ms(1), "0.000000".parse::<Decimal>().unwrap());
        assert_eq!(hours_of_ms(4), "0.000001".parse::<Decimal>().unwrap());
    }
}
