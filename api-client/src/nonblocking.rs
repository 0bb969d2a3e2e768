//! The async transport: reqwest on the caller's runtime, one request per operation.

use cynic::Operation;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{answer, ClientError};

/// The API at one address, as one key. Cheap to clone; [`AsyncClient::with_key`] gives
/// the same API as another key over the same connections, as a load generator needs.
#[derive(Debug, Clone)]
pub struct AsyncClient {
    http: reqwest::Client,
    /// The GraphQL endpoint.
    url: String,
    key: String,
}

impl AsyncClient {
    /// The API at `base_url` (e.g. `http://127.0.0.1:8080`, GraphQL at `/graphql`) with the
    /// API key `key` (surrounding whitespace is ignored). Requests have no time limit: a
    /// stalled API shows as latency, which is what a load generator measures.
    pub fn new(base_url: &str, key: &str) -> AsyncClient {
        AsyncClient {
            http: reqwest::Client::new(),
            url: format!("{}/graphql", base_url.trim_end_matches('/')),
            key: key.trim().to_owned(),
        }
    }

    /// The same API as `key`, sharing this client's connections.
    pub fn with_key(&self, key: &str) -> AsyncClient {
        AsyncClient {
            key: key.trim().to_owned(),
            ..self.clone()
        }
    }

    /// Sends `operation`; its data, or why there is none.
    pub async fn run<F, V>(&self, operation: &Operation<F, V>) -> Result<F, ClientError>
    where
        F: DeserializeOwned,
        V: Serialize,
    {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(operation)
            .send()
            .await
            .map_err(ClientError::unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(ClientError::unreachable)?;
        answer(status, &body)
    }
}
