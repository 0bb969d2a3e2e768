//! CometBFT's event query language, as `tx_search` takes it: conditions joined by `AND`,
//! each `KEY OP OPERAND` or `KEY EXISTS`, where OP is `=`, `<`, `<=`, `>`, `>=` or
//! `CONTAINS` and the operand a 'quoted string', a number, `DATE 2024-01-31` or
//! `TIME 2024-01-31T10:00:00Z`. `tx.height` and `tx.hash` are the reserved keys; any other
//! key is `{event type}.{attribute}`, and, as in CometBFT since 0.34.26, conditions on one
//! event type must hold in the same event.

use chrono::{DateTime, NaiveDate, Utc};
use cosmrs::proto::tendermint::abci::Event;
use rust_decimal::Decimal;

/// A query that does not parse, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query {query:?}: {reason}")]
pub struct BadQuery {
    pub query: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Text(String),
    Number(Decimal),
    Date(NaiveDate),
    Time(DateTime<Utc>),
    None,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    key: String,
    op: Op,
    operand: Operand,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    conditions: Vec<Condition>,
}

/// CometBFT 0.38 refuses longer queries.
pub const MAX_QUERY_LENGTH: usize = 512;

impl Query {
    pub fn parse(text: &str) -> Result<Query, BadQuery> {
        let bad = |reason: String| BadQuery {
            query: text.to_owned(),
            reason,
        };
        if text.len() > MAX_QUERY_LENGTH {
            return Err(bad("maximum query length exceeded".into()));
        }
        let mut rest = text.trim_start();
        let mut conditions = Vec::new();
        loop {
            let key_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
                .unwrap_or(rest.len());
            if key_len == 0 {
                return Err(bad(format!("expected a key at {rest:?}")));
            }
            let key = rest[..key_len].to_owned();
            rest = rest[key_len..].trim_start();
            let (op, after) = [
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("=", Op::Eq),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("CONTAINS", Op::Contains),
                ("EXISTS", Op::Exists),
            ]
            .into_iter()
            .find_map(|(word, op)| rest.strip_prefix(word).map(|after| (op, after)))
            .ok_or_else(|| bad(format!("expected an operator after {key}")))?;
            rest = after.trim_start();
            let operand = if op == Op::Exists {
                Operand::None
            } else if let Some(quoted) = rest.strip_prefix('\'') {
                let end = quoted
                    .find('\'')
                    .ok_or_else(|| bad("unterminated string".into()))?;
                rest = &quoted[end + 1..];
                Operand::Text(quoted[..end].to_owned())
            } else {
                let word_len = |s: &str| s.find(char::is_whitespace).unwrap_or(s.len());
                let (kind, value) = match rest.split_once(char::is_whitespace) {
                    Some((k @ ("DATE" | "TIME"), v)) => (Some(k), v.trim_start()),
                    _ => (None, rest),
                };
                let word = &value[..word_len(value)];
                rest = &value[word.len()..];
                match kind {
                    Some("DATE") => Operand::Date(
                        NaiveDate::parse_from_str(word, "%Y-%m-%d")
                            .map_err(|e| bad(format!("date {word}: {e}")))?,
                    ),
                    Some(_) => Operand::Time(
                        DateTime::parse_from_rfc3339(word)
                            .map_err(|e| bad(format!("time {word}: {e}")))?
                            .with_timezone(&Utc),
                    ),
                    None => Operand::Number(
                        word.parse()
                            .map_err(|_| bad(format!("expected a value at {word:?}")))?,
                    ),
                }
            };
            let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
            match (&operand, op) {
                (Operand::Text(_), o) if o != Op::Eq && o != Op::Contains => {
                    return Err(bad(format!("{key}: a string only takes = or CONTAINS")))
                }
                (Operand::Number(_) | Operand::Date(_) | Operand::Time(_), Op::Contains) => {
                    return Err(bad(format!("{key}: CONTAINS takes a string")))
                }
                (_, Op::Exists) => {}
                _ if key == "tx.height" && !matches!(operand, Operand::Number(_)) => {
                    return Err(bad("tx.height takes a number".into()))
                }
                _ if key == "tx.hash" && (ordering || !matches!(operand, Operand::Text(_))) => {
                    return Err(bad("tx.hash takes = and a quoted hash".into()))
                }
                _ => {}
            }
            conditions.push(Condition { key, op, operand });
            rest = rest.trim_start();
            if rest.is_empty() {
                return Ok(Query { conditions });
            }
            rest = rest
                .strip_prefix("AND")
                .filter(|r| r.starts_with(char::is_whitespace))
                .ok_or_else(|| bad(format!("expected AND at {rest:?}")))?
                .trim_start();
        }
    }

    /// The hash a `tx.hash = '...'` condition names: the one transaction it can match.
    pub fn hash(&self) -> Option<String> {
        self.conditions
            .iter()
            .find_map(|c| match (&c.operand, c.op) {
                (Operand::Text(h), Op::Eq) if c.key == "tx.hash" => Some(h.to_uppercase()),
                _ => None,
            })
    }

    /// The heights the query can match, from its `tx.height` conditions.
    pub fn heights(&self) -> std::ops::RangeInclusive<u64> {
        let (mut from, mut to) = (0u64, u64::MAX);
        for c in self.conditions.iter().filter(|c| c.key == "tx.height") {
            let Operand::Number(n) = c.operand else {
                continue;
            };
            // Heights are whole: `> 4.5` is `>= 5`, `< 4.5` is `<= 4`.
            let (floor, ceil) = (n.floor(), n.ceil());
            let at = |d: Decimal| u64::try_from(d.max(Decimal::ZERO)).unwrap_or(u64::MAX);
            match c.op {
                Op::Eq if n == floor => (from, to) = (from.max(at(n)), to.min(at(n))),
                Op::Eq => (from, to) = (1, 0),
                Op::Gt => from = from.max(at(floor).saturating_add(1)),
                Op::Ge => from = from.max(at(ceil)),
                Op::Lt if n <= Decimal::ZERO => to = 0,
                Op::Lt => to = to.min(at(ceil) - 1),
                Op::Le => to = to.min(at(floor)),
                Op::Contains | Op::Exists => {}
            }
        }
        from..=to
    }

    /// Whether the transaction with this hash (upper-case hex), at `height`, with these
    /// events, matches.
    pub fn matches(&self, height: u64, hash: &str, events: &[Event]) -> bool {
        let mut by_type: Vec<(&str, Vec<&Condition>)> = Vec::new();
        for c in &self.conditions {
            match c.key.as_str() {
                "tx.height" => {
                    if let Operand::Number(n) = c.operand {
                        if !compare(Decimal::from(height).cmp(&n), c.op) {
                            return false;
                        }
                    }
                }
                "tx.hash" => {
                    if let Operand::Text(h) = &c.operand {
                        if !h.eq_ignore_ascii_case(hash) {
                            return false;
                        }
                    }
                }
                // Subscriptions' event kind; the indexer has nothing to match it against.
                "tm.event" => {}
                key => {
                    let kind = key.split_once('.').map_or(key, |(t, _)| t);
                    match by_type.iter_mut().find(|(t, _)| *t == kind) {
                        Some((_, group)) => group.push(c),
                        None => by_type.push((kind, vec![c])),
                    }
                }
            }
        }
        by_type.iter().all(|(kind, group)| {
            events
                .iter()
                .filter(|e| e.r#type == *kind)
                .any(|e| group.iter().all(|c| holds(c, e)))
        })
    }
}

fn holds(c: &Condition, event: &Event) -> bool {
    event.attributes.iter().any(|a| {
        format!("{}.{}", event.r#type, a.key) == c.key
            && match (&c.operand, c.op) {
                (_, Op::Exists) => true,
                (Operand::Text(t), Op::Contains) => a.value.contains(t.as_str()),
                (Operand::Text(t), _) => a.value == *t,
                (Operand::Number(n), op) => a
                    .value
                    .parse::<Decimal>()
                    .is_ok_and(|v| compare(v.cmp(n), op)),
                (Operand::Date(d), op) => NaiveDate::parse_from_str(&a.value, "%Y-%m-%d")
                    .ok()
                    .or_else(|| {
                        DateTime::parse_from_rfc3339(&a.value)
                            .ok()
                            .map(|t| t.date_naive())
                    })
                    .is_some_and(|v| compare(v.cmp(d), op)),
                (Operand::Time(t), op) => DateTime::parse_from_rfc3339(&a.value)
                    .is_ok_and(|v| compare(v.with_timezone(&Utc).cmp(t), op)),
                (Operand::None, _) => false,
            }
    })
}

fn compare(ordering: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ordering == Equal,
        Op::Lt => ordering == Less,
        Op::Le => ordering != Greater,
        Op::Gt => ordering == Greater,
        Op::Ge => ordering != Less,
        Op::Contains | Op::Exists => false,
    }
}
