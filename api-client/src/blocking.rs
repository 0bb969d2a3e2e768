//! The blocking transport: reqwest's blocking client, one request per operation.

use std::time::Duration;

use cynic::{Operation, StreamingOperation};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{answer, ClientError};
use crate::ws::Subscription;

/// The API at one address, as one key (or none). Cheap to clone: clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    /// Without a trailing `/`.
    base_url: String,
    key: Option<String>,
    timeout: Duration,
}

impl Client {
    /// The API at `base_url` (e.g. `http://127.0.0.1:8080`, GraphQL at `/graphql`) with the
    /// API key `key` (surrounding whitespace, as a key file has, is ignored). Requests time
    /// out after 30 s unless [`Client::with_timeout`] says otherwise.
    pub fn new(base_url: &str, key: &str) -> Client {
        Client {
            key: Some(key.trim().to_owned()),
            ..Client::anonymous(base_url)
        }
    }

    /// The API without a key: what anyone may do (public subscriptions), and what a
    /// caller without a key is told.
    pub fn anonymous(base_url: &str) -> Client {
        Client {
            http: reqwest::blocking::Client::builder()
                .build()
                .expect("an HTTP client with default TLS-less settings"),
            base_url: base_url.trim_end_matches('/').to_owned(),
            key: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The same API as `key`, sharing this client's connections (and its time limit).
    pub fn with_key(&self, key: &str) -> Client {
        Client {
            key: Some(key.trim().to_owned()),
            ..self.clone()
        }
    }

    /// How long a request, or a subscription's handshake, may take before it counts as
    /// unreachable.
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client { timeout, ..self }
    }

    /// Sends `operation`; its data, or why there is none.
    pub fn run<F, V>(&self, operation: &Operation<F, V>) -> Result<F, ClientError>
    where
        F: DeserializeOwned,
        V: Serialize,
    {
        let response = self
            .request()
            .json(operation)
            .send()
            .map_err(ClientError::unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().map_err(ClientError::unreachable)?;
        answer(status, &body)
    }

    /// Sends a document that is not one of this crate's operations, as it is: for tests of
    /// how the API treats malformed, hostile or oversized requests, never for callers that
    /// want an answer. The HTTP status and the JSON body, whatever they say; an error only
    /// when there is no JSON answer at all.
    pub fn post_raw(
        &self,
        document: &str,
        variables: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let response = self
            .request()
            .json(&serde_json::json!({"query": document, "variables": variables}))
            .send()
            .map_err(ClientError::unreachable)?;
        let status = response.status().as_u16();
        let body = response
            .json()
            .map_err(|e| ClientError::unreachable(format!("HTTP {status}: {e}")))?;
        Ok((status, body))
    }

    /// Opens `operation` on a websocket (`graphql-transport-ws`), authenticated with this
    /// client's key; the items come from [`Subscription::next`].
    pub fn subscribe<F, V>(
        &self,
        operation: &StreamingOperation<F, V>,
    ) -> Result<Subscription<F>, ClientError>
    where
        V: Serialize,
    {
        Subscription::open(&self.base_url, self.key.as_deref(), operation, self.timeout)
    }

    /// Uploads `body` as a blob (`PUT /blobs`), streamed: `claimed`, when given, is the
    /// digest the body must have (else `DIGEST_MISMATCH`, nothing stored); `lease` makes it
    /// the output of that lease's job (a provider's agent). Answers the blob as stored.
    pub fn put_blob(
        &self,
        body: reqwest::blocking::Body,
        claimed: Option<&str>,
        lease: Option<u64>,
    ) -> Result<StoredBlob, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(digest) = claimed {
            query.push(("digest", digest.to_owned()));
        }
        if let Some(lease) = lease {
            query.push(("lease", lease.to_string()));
        }
        let request = self
            .http
            .put(format!("{}/blobs", self.base_url))
            .query(&query)
            .body(body);
        let response = self
            .keyed(request)
            .send()
            .map_err(ClientError::unreachable)?;
        plain_answer(response)?
            .json()
            .map_err(ClientError::unreachable)
    }

    /// A blob's bytes (`GET /blobs/{cid}`), as a reader of the response body: nothing is
    /// held in memory. The caller checks the digest of what it reads.
    pub fn get_blob(&self, cid: &str) -> Result<reqwest::blocking::Response, ClientError> {
        let request = self.http.get(format!("{}/blobs/{cid}", self.base_url));
        let response = self
            .keyed(request)
            .send()
            .map_err(ClientError::unreachable)?;
        plain_answer(response)
    }

    fn keyed(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn request(&self) -> reqwest::blocking::RequestBuilder {
        let request = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .timeout(self.timeout);
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }
}

/// What `PUT /blobs` stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StoredBlob {
    pub cid: String,
    pub sha256: String,
    pub size: u64,
}

/// A `/blobs` response: itself when it succeeded, else the error its `{code, message}` body
/// stands for (mapped as GraphQL errors are).
fn plain_answer(
    response: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    #[derive(serde::Deserialize)]
    struct Refusal {
        code: String,
        message: String,
    }
    let refusal: Refusal = response
        .json()
        .map_err(|e| ClientError::unreachable(format!("HTTP {status}: {e}")))?;
    Err(crate::error::coded(refusal.code, refusal.message))
}
