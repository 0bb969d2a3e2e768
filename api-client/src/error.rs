//! What an answer means: the operation's data, or why there is none. One mapping for both
//! transports and for subscriptions, so a code means the same whichever way it came.

use contract::ErrorCode;
use cynic::{GraphQlError, GraphQlResponse};
use serde::de::{DeserializeOwned, IgnoredAny};

/// Why a call did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Worth retrying unchanged later: no connection, a timeout, an answer that is not
    /// GraphQL, or a transient code ([`ErrorCode::is_transient`]: the API or its
    /// dependencies down, a rate limit, an engine that did not answer in time).
    #[error("API unreachable: {message}")]
    Unreachable {
        /// The API's code, when it answered with a transient one.
        code: Option<ErrorCode>,
        message: String,
    },
    /// The API answered no: retrying the same request gets the same answer.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// The API answered no with a code this build does not know (a newer server's), or with
    /// none: a websocket the server closed during its handshake says only why.
    #[error("{}: {message}", code.as_deref().unwrap_or("refused without a code"))]
    Unrecognised {
        code: Option<String>,
        message: String,
    },
}

impl ClientError {
    pub(crate) fn unreachable(message: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            code: None,
            message: message.to_string(),
        }
    }
}

/// The part of an error's `extensions` that this client reads.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Extensions {
    code: Option<String>,
}

/// What the API's error means for the caller.
pub(crate) fn refusal(error: GraphQlError<Extensions>) -> ClientError {
    let message = error.message;
    let Some(code) = error.extensions.and_then(|e| e.code) else {
        return ClientError::Unrecognised {
            code: None,
            message,
        };
    };
    coded(code, message)
}

/// The error a code and message stand for.
pub(crate) fn coded(code: String, message: String) -> ClientError {
    match code.parse::<ErrorCode>() {
        Ok(code) if code.is_transient() => ClientError::Unreachable {
            code: Some(code),
            message: format!("{code}: {message}"),
        },
        Ok(code) => ClientError::Refused { code, message },
        Err(_) => ClientError::Unrecognised {
            code: Some(code),
            message,
        },
    }
}

/// The answer to one request, from its HTTP status and body: its data, or the error its
/// first GraphQL error stands for. Refusals before execution (a bad key, a body too large,
/// a rate limit) come with an HTTP error status and the same JSON shape, so they map alike.
pub(crate) fn answer<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ClientError> {
    match serde_json::from_slice::<GraphQlResponse<T, Extensions>>(body) {
        Ok(GraphQlResponse {
            errors: Some(errors),
            ..
        }) if !errors.is_empty() => Err(refusal(errors.into_iter().next().expect("not empty"))),
        Ok(GraphQlResponse {
            data: Some(data), ..
        }) => Ok(data),
        Ok(_) => Err(ClientError::unreachable(format!(
            "HTTP {status}: an answer with neither data nor errors"
        ))),
        // Data that does not fit the operation may still come with the error that explains
        // it (a partial answer); anything else is not an answer from our API.
        Err(e) => match serde_json::from_slice::<GraphQlResponse<IgnoredAny, Extensions>>(body) {
            Ok(GraphQlResponse {
                errors: Some(errors),
                ..
            }) if !errors.is_empty() => Err(refusal(errors.into_iter().next().expect("not empty"))),
            _ => Err(ClientError::unreachable(format!("HTTP {status}: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The error (or `Ok` with the data) that an answer with `status` and `body` is.
    fn check(status: u16, body: &str, expect: Result<serde_json::Value, ClientError>) {
        assert_eq!(
            answer::<serde_json::Value>(status, body.as_bytes()),
            expect,
            "{status} {body}"
        );
    }

    fn error_body(code: &str) -> String {
        json!({"data": null, "errors": [{"message": "no", "extensions": {"code": code, "status": 400}}]})
            .to_string()
    }

    #[test]
    fn answers_map_to_data_or_one_error_by_code() {
        check(200, r#"{"data": {"a": 1}}"#, Ok(json!({"a": 1})));
        check(
            200,
            &error_body("UNKNOWN_ORDER"),
            Err(ClientError::Refused {
                code: ErrorCode::UnknownOrder,
                message: "no".into(),
            }),
        );
        // Refused before execution: an HTTP error status, the same body.
        check(
            401,
            &error_body("UNAUTHENTICATED"),
            Err(ClientError::Refused {
                code: ErrorCode::Unauthenticated,
                message: "no".into(),
            }),
        );
        for transient in ["RATE_LIMITED", "UNAVAILABLE", "ENGINE_TIMEOUT", "INTERNAL"] {
            let code = transient.parse().unwrap();
            check(
                429,
                &error_body(transient),
                Err(ClientError::Unreachable {
                    code: Some(code),
                    message: format!("{transient}: no"),
                }),
            );
        }
        check(
            200,
            &error_body("A_CODE_FROM_A_NEWER_SERVER"),
            Err(ClientError::Unrecognised {
                code: Some("A_CODE_FROM_A_NEWER_SERVER".into()),
                message: "no".into(),
            }),
        );
        check(
            200,
            r#"{"errors": [{"message": "no"}]}"#,
            Err(ClientError::Unrecognised {
                code: None,
                message: "no".into(),
            }),
        );
        check(
            502,
            "<html>Bad Gateway</html>",
            Err(ClientError::unreachable(
                "HTTP 502: expected value at line 1 column 1",
            )),
        );
        check(
            200,
            "{}",
            Err(ClientError::unreachable(
                "HTTP 200: Either data or errors must be present in a GraphQL response",
            )),
        );
    }

    #[test]
    fn data_that_does_not_fit_still_yields_the_error_that_came_with_it() {
        let body = json!({"data": {"n": "not a number"},
            "errors": [{"message": "partly", "extensions": {"code": "NOT_FOUND"}}]});
        assert_eq!(
            answer::<std::collections::HashMap<String, u64>>(200, body.to_string().as_bytes()),
            Err(ClientError::Refused {
                code: ErrorCode::NotFound,
                message: "partly".into()
            })
        );
    }
}
