//! Money and quantities.
//!
//! Prices and amounts are decimal at every edge (text, JSON, the API) and exact integers of
//! micro-units (scale 6, the `uusdc` of the chain boundary) inside: the engine adds and
//! multiplies integers, never floats and never rounds. A decimal with more than six places
//! is refused, not rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places carried by [`Amount`] and [`Price`].
pub const SCALE: u32 = 6;

/// Why a number is not a valid amount, price or quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{input:?} is not a decimal number")]
    NotANumber { input: String },
    #[error("{value} has more than {SCALE} decimal places")]
    TooPrecise { value: Decimal },
    #[error("{value} is out of range")]
    OutOfRange { value: Decimal },
    #[error("{what} must be positive (got {value})")]
    NotPositive { what: &'static str, value: Decimal },
    #[error("{what} must be a whole number between {min} and {max} (got {input:?})")]
    BadInteger {
        what: &'static str,
        input: String,
        min: u64,
        max: u64,
    },
}

fn micros_from_decimal(value: Decimal) -> Result<i64, MoneyError> {
    let value = value.normalize();
    if value.scale() > SCALE {
        return Err(MoneyError::TooPrecise { value });
    }
    let micros = value.mantissa() * 10i128.pow(SCALE - value.scale());
    i64::try_from(micros).map_err(|_| MoneyError::OutOfRange { value })
}

fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    Decimal::from_str_exact(s.trim()).map_err(|_| MoneyError::NotANumber {
        input: s.to_owned(),
    })
}

macro_rules! micro_money {
    ($(#[$doc:meta])* $name:ident, positive: $positive:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(i64);

        impl $name {
            pub const ZERO: $name = $name(0);

            /// Exact conversion; more than six decimal places is an error, never rounded.
            pub fn from_decimal(value: Decimal) -> Result<Self, MoneyError> {
                let micros = micros_from_decimal(value)?;
                if $positive && micros <= 0 {
                    return Err(MoneyError::NotPositive { what: $what, value });
                }
                Ok($name(micros))
            }

            pub fn parse(s: &str) -> Result<Self, MoneyError> {
                Self::from_decimal(parse_decimal(s)?)
            }

            /// From integer micro-units (`1_000_000` is one unit).
            pub const fn from_micros(micros: i64) -> Self {
                $name(micros)
            }

            pub const fn micros(self) -> i64 {
                self.0
            }

            pub fn to_decimal(self) -> Decimal {
                Decimal::new(self.0, SCALE).normalize()
            }
        }

        impl FromStr for $name {
            type Err = MoneyError;
            fn from_str(s: &str) -> Result<Self, MoneyError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.to_decimal(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        /// Text formats carry the decimal string (`"2.5"`); binary formats the micro-units.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_i64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    Self::parse(&s).map_err(serde::de::Error::custom)
                } else {
                    let micros = i64::deserialize(d)?;
                    if $positive && micros <= 0 {
                        return Err(serde::de::Error::custom(concat!($what, " must be positive")));
                    }
                    Ok($name(micros))
                }
            }
        }
    };
}

micro_money!(
    /// An amount of money in the market's settlement currency; may be negative in a posting.
    Amount,
    positive: false,
    "amount"
);
micro_money!(
    /// A price per GPU-hour; always positive. Each market also fixes a tick it must be a
    /// multiple of (checked by the engine, which knows the market).
    Price,
    positive: true,
    "price"
);

impl Amount {
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl Price {
    /// `price × gpus × hours`, or `None` when it does not fit.
    pub fn cost(self, gpus: Gpus, hours: Hours) -> Option<Amount> {
        self.0
            .checked_mul(i64::from(gpus.0))?
            .checked_mul(i64::from(hours.0))
            .map(Amount)
    }
}

macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident($int:ty), $what:literal, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize,
        )]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name(pub(crate) $int);

        impl $name {
            pub const MIN: $name = $name($min);
            pub const MAX: $name = $name($max);

            pub fn new(value: u64) -> Result<Self, MoneyError> {
                if value < $min as u64 || value > $max as u64 {
                    return Err(MoneyError::BadInteger {
                        what: $what,
                        input: value.to_string(),
                        min: $min as u64,
                        max: $max as u64,
                    });
                }
                Ok($name(value as $int))
            }

            pub fn parse(s: &str) -> Result<Self, MoneyError> {
                let bad = || MoneyError::BadInteger {
                    what: $what,
                    input: s.to_owned(),
                    min: $min as u64,
                    max: $max as u64,
                };
                Self::new(s.trim().parse::<u64>().map_err(|_| bad())?).map_err(|_| bad())
            }

            pub const fn get(self) -> $int {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = MoneyError;
            fn try_from(value: u64) -> Result<Self, MoneyError> {
                Self::new(value)
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0 as u64
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

bounded_int!(
    /// A number of GPUs, at least one. 65,536 GPUs is the most one order may carry.
    Gpus(u32),
    "GPU count",
    1,
    65_536
);
bounded_int!(
    /// A lease duration in whole hours, one hour to one year.
    Hours(u32),
    "hours",
    1,
    8_760
);
bounded_int!(
    /// A provider's reputation score in thousandths (0 = unknown or bad, 1000 = perfect).
    Reputation(u16),
    "reputation",
    0,
    1_000
);
bounded_int!(
    /// A fee in basis points of a lease's charge (at most 100%).
    FeeRate(u16),
    "fee rate",
    0,
    10_000
);

/// Milliseconds since the Unix epoch. The engine never reads a clock: time arrives in
/// commands, so replays see the same time.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MS_PER_HOUR: i64 = 3_600_000;

    pub fn plus_hours(self, hours: Hours) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::from(hours.0) * Self::MS_PER_HOUR),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_or_refused() {
        assert_eq!(Price::parse("2.5").unwrap().micros(), 2_500_000);
        assert_eq!(Price::parse("0.000001").unwrap().micros(), 1);
        assert_eq!(Price::parse("2.500000000").unwrap().micros(), 2_500_000);
        assert!(matches!(
            Price::parse("0.0000001"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            Price::parse("0"),
            Err(MoneyError::NotPositive { .. })
        ));
        assert!(matches!(
            Price::parse("-1"),
            Err(MoneyError::NotPositive { .. })
        ));
        assert!(matches!(
            Price::parse("1e3"),
            Err(MoneyError::NotANumber { .. })
        ));
        assert!(matches!(
            Price::parse("99999999999999999"),
            Err(MoneyError::OutOfRange { .. })
        ));
        assert_eq!(Amount::parse("-3.25").unwrap().micros(), -3_250_000);
    }

    #[test]
    fn money_text_form_is_decimal_and_binary_form_is_micros() {
        let p = Price::parse("1.75").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"1.75\"");
        assert_eq!(serde_json::from_str::<Price>("\"1.75\"").unwrap(), p);
        assert!(serde_json::from_str::<Price>("\"-1\"").is_err());
        assert_eq!(p.to_string(), "1.75");
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Gpus::new(0).is_err());
        assert_eq!(Gpus::parse("8").unwrap().get(), 8);
        assert!(Gpus::parse("-1").is_err());
        assert!(Hours::new(8_761).is_err());
        assert!(serde_json::from_str::<Gpus>("0").is_err());
        assert!(Reputation::new(1_001).is_err());
    }

    #[test]
    fn cost_is_exact_and_overflow_is_none() {
        let p = Price::parse("2.01").unwrap();
        assert_eq!(
            p.cost(Gpus::new(8).unwrap(), Hours::new(3).unwrap()),
            Some(Amount::parse("48.24").unwrap())
        );
        let huge = Price::from_micros(i64::MAX / 2);
        assert_eq!(
            huge.cost(Gpus::new(8).unwrap(), Hours::new(3).unwrap()),
            None
        );
    }
}
