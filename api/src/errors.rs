//! The one table of error codes. Every failure the API reports carries one of these codes,
//! as GraphQL `extensions.code` and, on REST routes, with the HTTP status beside it.

use contract::Rejection;

/// An error as the API reports it: a stable code, its HTTP status and a readable message.
///
/// Deliberately not `Display`: async-graphql converts every `Display` type into an error
/// without extensions, and this type must always carry its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

/// Every code the API itself produces, with its HTTP status and when it happens. The
/// engine's rejection codes (`contract::Rejection::code`) come on top: see [`ApiError::rejected`].
pub const CODES: &[(&str, u16, &str)] = &[
    ("VALIDATION", 400, "an argument is malformed or out of range; nothing changed"),
    ("UNAUTHENTICATED", 401, "no API key, or a key that is unknown, malformed or revoked"),
    ("FORBIDDEN", 403, "the key's role may not do this, or the object is another account's"),
    ("NOT_FOUND", 404, "no such object"),
    ("PAYLOAD_TOO_LARGE", 413, "the request body is larger than the limit"),
    ("QUERY_TOO_COMPLEX", 400, "the query is deeper or more complex than the limits"),
    ("RATE_LIMITED", 429, "the key sent more requests than its rate allows; retry later"),
    ("ENGINE_TIMEOUT", 504, "the command is in the log but the engine did not answer in time; it will still be applied, retry with the same client order id to learn the result"),
    ("UNAVAILABLE", 503, "a dependency (Postgres, the event log) is not reachable"),
    ("INTERNAL", 500, "a bug; the log has the details"),
];

impl ApiError {
    fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        let status = CODES
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or(500, |(_, status, _)| *status);
        ApiError {
            code,
            status,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new("VALIDATION", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new("UNAUTHENTICATED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new("FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("NOT_FOUND", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new("PAYLOAD_TOO_LARGE", message)
    }

    pub fn rate_limited(message: impl Into<String>) -> ApiError {
        ApiError::new("RATE_LIMITED", message)
    }

    pub fn engine_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new("ENGINE_TIMEOUT", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new("UNAVAILABLE", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new("INTERNAL", message)
    }

    /// `CODE: message`, for logs and the command line.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    /// The engine refused the command: its own stable code, a 4xx status by kind.
    pub fn rejected(rejection: &Rejection) -> ApiError {
        let status = match rejection {
            Rejection::UnknownMarket { .. }
            | Rejection::UnknownOrder { .. }
            | Rejection::UnknownLease { .. } => 404,
            Rejection::NotOwner { .. }
            | Rejection::NotLeaseParty { .. }
            | Rejection::NotLeaseProvider { .. }
            | Rejection::ReservedAccount { .. } => 403,
            Rejection::InsufficientFunds { .. } => 402,
            _ => 422,
        };
        ApiError {
            code: rejection.code(),
            status,
            message: rejection.to_string(),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> ApiError {
        tracing::error!(error = %e, "database query failed");
        ApiError::unavailable(format!("database: {e}"))
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> async_graphql::Error {
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| {
            ext.set("code", e.code);
            ext.set("status", e.status);
        })
    }
}
