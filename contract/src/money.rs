//! Money and quantities.
//!
//! Prices and amounts are decimal at every edge (text, JSON, the API) and exact integers of
//! micro-units (scale 6, the `uusdc` of the chain boundary) inside: the engine adds and
//! multiplies integers, never floats and never rounds. A decimal with more than six places
//! is refused, not rounded.
//!
//! Text is read strictly, in one grammar per kind, so that one value has few spellings and
//! nothing a person might mean differently is guessed at:
//!
//! - a decimal (`Amount`, `Price`) is `-?DIGITS(.DIGITS)?` in ASCII digits: no `+`, no
//!   whitespace anywhere, no `_` or `,` separators, no exponent (`1e3`), no bare dot (`.5`,
//!   `5.`). Leading zeros and trailing zeros after the point are the same value (`007.50`
//!   is `7.5`); `-0` is zero. Beyond that, the value decides: more than six places after
//!   trailing zeros are dropped is too precise, more than `i64::MAX` micro-units is out of
//!   range;
//! - a count (`Gpus`, `Hours`, `Reputation`, `FeeRate`) is `DIGITS`: no sign, no
//!   whitespace, leading zeros allowed, then the type's bounds.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::all_digits;

/// Decimal places carried by [`Amount`] and [`Price`].
pub const SCALE: u32 = 6;

/// Why a number is not a valid amount, price or quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{input:?} is not a decimal number (digits, optionally a '-' before and one '.' between them)")]
    NotANumber { input: String },
    #[error("{input} has more than {SCALE} decimal places")]
    TooPrecise { input: String },
    #[error("{input} is out of range")]
    OutOfRange { input: String },
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
        return Err(MoneyError::TooPrecise {
            input: value.to_string(),
        });
    }
    let micros = value.mantissa() * 10i128.pow(SCALE - value.scale());
    i64::try_from(micros).map_err(|_| MoneyError::OutOfRange {
        input: value.to_string(),
    })
}

/// The most digits before the point of a value in range: `i64::MAX` micro-units is
/// 9,223,372,036,854.775807.
const MAX_WHOLE_DIGITS: usize = 13;

/// Reads the decimal grammar of the module documentation into micro-units.
fn parse_micros(s: &str) -> Result<i64, MoneyError> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(MoneyError::NotANumber {
            input: s.to_owned(),
        });
    }
    // Zeros that do not change the value are not counted against the limits.
    let fraction = fraction.unwrap_or("").trim_end_matches('0');
    if fraction.len() > SCALE as usize {
        return Err(MoneyError::TooPrecise {
            input: s.to_owned(),
        });
    }
    let whole = whole.trim_start_matches('0');
    let out_of_range = || MoneyError::OutOfRange {
        input: s.to_owned(),
    };
    if whole.len() > MAX_WHOLE_DIGITS {
        return Err(out_of_range());
    }
    // At most 13 and 6 ASCII digits: both parse, and the sum fits an i128.
    let digits = |part: &str| part.parse::<i128>().unwrap_or(0);
    let scale = 10i128.pow(SCALE - fraction.len() as u32);
    let micros = digits(whole) * 10i128.pow(SCALE) + digits(fraction) * scale;
    i64::try_from(if negative { -micros } else { micros }).map_err(|_| out_of_range())
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
                Self::checked(micros_from_decimal(value)?)
            }

            /// Reads `-?DIGITS(.DIGITS)?` (ASCII digits; no `+`, whitespace, separators,
            /// exponent or bare dot; `-0` is zero), exactly: more than six decimal places
            /// is [`MoneyError::TooPrecise`], never rounded.
            pub fn parse(s: &str) -> Result<Self, MoneyError> {
                Self::checked(parse_micros(s)?)
            }

            fn checked(micros: i64) -> Result<Self, MoneyError> {
                if $positive && micros <= 0 {
                    return Err(MoneyError::NotPositive {
                        what: $what,
                        value: Decimal::new(micros, SCALE),
                    });
                }
                Ok($name(micros))
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

    /// The charge for `ms` milliseconds of `gpus` GPUs at this price per GPU-hour, rounded
    /// down to the micro-unit: `floor(price × gpus × ms / 3,600,000)`, or `None` when it does
    /// not fit. The market's one rounding rule (see `contract::market`).
    pub fn charge_for(self, gpus: Gpus, ms: u64) -> Option<Amount> {
        let exact = i128::from(self.0)
            .checked_mul(i128::from(gpus.0))?
            .checked_mul(i128::from(ms))?;
        i64::try_from(exact / i128::from(Timestamp::MS_PER_HOUR))
            .ok()
            .map(Amount)
    }
}

impl FeeRate {
    /// The fee on `charge`, rounded down to the micro-unit: `floor(charge × bps / 10,000)`,
    /// at most the charge.
    pub fn fee_on(self, charge: Amount) -> Amount {
        let fee = i128::from(charge.0) * i128::from(self.0) / 10_000;
        Amount(i64::try_from(fee).expect("a fee is at most its charge"))
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

            /// Reads `DIGITS` (ASCII digits, leading zeros allowed; no sign, no
            /// whitespace) within the type's bounds.
            pub fn parse(s: &str) -> Result<Self, MoneyError> {
                let bad = || MoneyError::BadInteger {
                    what: $what,
                    input: s.to_owned(),
                    min: $min as u64,
                    max: $max as u64,
                };
                if !all_digits(s) {
                    return Err(bad());
                }
                Self::new(s.parse::<u64>().map_err(|_| bad())?).map_err(|_| bad())
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
    fn decimals_are_read_in_one_strict_grammar() {
        // Given a spelling, then its micro-units.
        for (text, micros) in [
            ("2.10", 2_100_000),
            ("0", 0),
            ("-0", 0),
            ("-0.000", 0),
            ("007.50", 7_500_000),
            ("00000000000000000000000001", 1_000_000),
            (&format!("0.1{}", "0".repeat(40)), 100_000),
            ("9223372036854.775807", i64::MAX),
            ("-9223372036854.775808", i64::MIN),
        ] {
            assert_eq!(
                Amount::parse(text).map(Amount::micros),
                Ok(micros),
                "{text:?}"
            );
        }
        for text in [
            "", "-", "+2.10", " 2.10 ", " 2.10", "2.10 ", "2 .10", "2.10\n", "1_000", "1,000",
            "1e3", "1E3", ".5", "5.", "-.5", "1..2", "1.2.3", "--1", "-+1", "0x10", "\u{663}",
            "NaN", "inf",
        ] {
            assert_eq!(
                Amount::parse(text),
                Err(MoneyError::NotANumber {
                    input: text.to_owned()
                }),
                "{text:?}"
            );
        }
        for text in ["0.0000001", "1.00000010", &format!("0.{}1", "0".repeat(40))] {
            assert!(
                matches!(Amount::parse(text), Err(MoneyError::TooPrecise { .. })),
                "{text:?}"
            );
        }
        for text in [
            "9223372036854.775808",
            "-9223372036854.775809",
            "99999999999999",
            &format!("1{}", "0".repeat(40)),
        ] {
            assert!(
                matches!(Amount::parse(text), Err(MoneyError::OutOfRange { .. })),
                "{text:?}"
            );
        }
        // A price reads the same grammar; zero, however spelt, is not a price.
        assert_eq!(Price::parse("2.10").unwrap().micros(), 2_100_000);
        for text in ["+2.10", " 2.10 ", "1_000", ".5"] {
            assert!(
                matches!(Price::parse(text), Err(MoneyError::NotANumber { .. })),
                "{text:?}"
            );
        }
        assert!(matches!(
            Price::parse("-0"),
            Err(MoneyError::NotPositive { .. })
        ));
        assert!(serde_json::from_str::<Price>("\" 1.75\"").is_err());
        assert!(serde_json::from_str::<Amount>("\"+1.75\"").is_err());
    }

    #[test]
    fn counts_are_digits_only() {
        assert_eq!(Gpus::parse("8").unwrap().get(), 8);
        assert_eq!(Gpus::parse("008").unwrap().get(), 8);
        assert_eq!(Hours::parse("8760").unwrap().get(), 8_760);
        for text in ["", "+8", " 8", "8 ", "-0", "8.0", "1_0", "0x8", "\u{664}"] {
            assert!(
                matches!(Gpus::parse(text), Err(MoneyError::BadInteger { .. })),
                "{text:?}"
            );
        }
        assert!(Hours::parse("8761").is_err());
        assert!(FeeRate::parse("+250").is_err());
        assert!(Reputation::parse("99999999999999999999").is_err());
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
