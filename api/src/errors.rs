//! Every failure the API reports is an [`ApiError`]: a code from the one table
//! ([`contract::ErrorCode`], which also gives the HTTP status) and a readable message. It
//! travels as GraphQL `extensions.code` and `extensions.status`, and on REST routes as the
//! response's status with the same body.

use contract::{ErrorCode, Rejection};
use engine_service::client::ClientError;
use ledger::LedgerError;

/// An error as the API reports it.
///
/// Deliberately not `Display`: async-graphql converts every `Display` type into an error
/// without extensions, and this type must always carry its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Validation, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// `CODE: message`, for logs and the command line.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    /// The engine refused the command: its own code.
    pub fn rejected(rejection: &Rejection) -> ApiError {
        ApiError::new(rejection.code(), rejection.to_string())
    }

    /// The JSON error object of GraphQL responses and REST bodies.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "message": self.message,
            "extensions": {"code": self.code, "status": self.status()},
        })
    }
}

/// The database's own words stay in the server's log: a client learns that the database
/// failed, never its schema or its data.
impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        use diesel::result::{DatabaseErrorKind as Kind, Error as Db};
        match &e {
            LedgerError::Database(Db::DatabaseError(
                Kind::ClosedConnection | Kind::UnableToSendCommand | Kind::SerializationFailure,
                _,
            )) => {
                tracing::warn!(error = %e, "database unreachable");
                ApiError::unavailable("the database is not reachable; retry")
            }
            LedgerError::OutOfRange { what, value } => {
                ApiError::validation(format!("{what} {value} is out of range"))
            }
            _ => {
                tracing::error!(error = %e, "database statement failed");
                ApiError::internal("a database statement failed; the server's log has the details")
            }
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        match e {
            ClientError::Unavailable(reason) => {
                ApiError::unavailable(format!("event log: {reason}"))
            }
            ClientError::Timeout(after) => ApiError::new(
                ErrorCode::EngineTimeout,
                format!("no answer within {} ms", after.as_millis()),
            ),
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> async_graphql::Error {
        use async_graphql::ErrorExtensions;
        async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| {
            ext.set("code", e.code.as_str());
            ext.set("status", e.status());
        })
    }
}
