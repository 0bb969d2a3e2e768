//! Subscriptions over a websocket at `/graphql` with the `graphql-transport-ws` protocol:
//! `connection_init` with the key, `connection_ack`, one `subscribe`, then `next` messages.

use std::io::ErrorKind;
use std::marker::PhantomData;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cynic::{GraphQlError, GraphQlResponse, StreamingOperation};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::error::{answer, refusal, ClientError, Extensions};

/// One open subscription: its items in order as the API sends them. A dropped connection
/// is an [`ClientError::Unreachable`] from [`Subscription::next`]; what the API sent while
/// no connection was open is lost, so a caller that reconnects counts only what it saw.
pub struct Subscription<F> {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    item: PhantomData<fn() -> F>,
}

impl<F> std::fmt::Debug for Subscription<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// A protocol message from the server.
#[derive(serde::Deserialize)]
struct ServerMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: serde_json::Value,
}

/// What a wait for the server brought.
enum Received {
    Message(ServerMessage),
    /// The server closed the websocket, saying why (or not).
    Closed(String),
    Nothing,
}

impl<F> Subscription<F> {
    /// Connects to `base_url`'s websocket, authenticates with `key` (in the init payload,
    /// as browsers must) and subscribes to `operation`; the handshake may take `timeout`.
    pub(crate) fn open<V: Serialize>(
        base_url: &str,
        key: Option<&str>,
        operation: &StreamingOperation<F, V>,
        timeout: Duration,
    ) -> Result<Subscription<F>, ClientError> {
        // `http://` becomes `ws://`, `https://` `wss://`.
        let url = format!(
            "ws{}/graphql",
            base_url.strip_prefix("http").unwrap_or(base_url)
        );
        let mut request = url
            .into_client_request()
            .map_err(ClientError::unreachable)?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
        );
        let (socket, _) = tungstenite::connect(request).map_err(|e| match e {
            // Refused before the upgrade: the same JSON body as any refusal.
            tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                answer::<IgnoredAny>(status, body).err().unwrap_or_else(|| {
                    ClientError::unreachable(format!("HTTP {status} to the websocket upgrade"))
                })
            }
            e => ClientError::unreachable(e),
        })?;
        let mut subscription = Subscription {
            socket,
            item: PhantomData,
        };
        let init = key.map_or(json!({}), |key| json!({"apiKey": key}));
        subscription.send(json!({"type": "connection_init", "payload": init}))?;
        let deadline = Instant::now() + timeout;
        loop {
            match subscription.receive(deadline)? {
                Received::Message(message) if message.kind == "connection_ack" => break,
                Received::Message(_) => {}
                // The API refuses an init (a bad key) by closing with the reason only.
                Received::Closed(reason) if !reason.is_empty() => {
                    return Err(ClientError::Unrecognised {
                        code: None,
                        message: reason,
                    })
                }
                Received::Closed(_) => {
                    return Err(ClientError::unreachable(
                        "the API closed the websocket during the handshake",
                    ))
                }
                Received::Nothing => {
                    return Err(ClientError::unreachable(
                        "the websocket handshake timed out",
                    ))
                }
            }
        }
        subscription.send(json!({"id": "1", "type": "subscribe", "payload": operation}))?;
        Ok(subscription)
    }

    fn send(&mut self, message: serde_json::Value) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(message.to_string()))
            .map_err(ClientError::unreachable)
    }

    /// The next protocol message other than a ping (answered here), until `deadline`.
    fn receive(&mut self, deadline: Instant) -> Result<Received, ClientError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Received::Nothing);
            }
            if let MaybeTlsStream::Plain(stream) = self.socket.get_ref() {
                stream
                    .set_read_timeout(Some(left))
                    .map_err(ClientError::unreachable)?;
            }
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    return Ok(Received::Closed(
                        frame.map_or_else(String::new, |f| f.reason.to_string()),
                    ))
                }
                // Websocket pings are answered by tungstenite itself.
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(ClientError::unreachable(e)),
            };
            let message: ServerMessage =
                serde_json::from_str(text.as_str()).map_err(ClientError::unreachable)?;
            if message.kind == "ping" {
                self.send(json!({"type": "pong"}))?;
                continue;
            }
            return Ok(Received::Message(message));
        }
    }
}

impl<F: DeserializeOwned> Subscription<F> {
    /// The next item, waiting at most `wait`: `None` when none came in that time.
    pub fn next(&mut self, wait: Duration) -> Result<Option<F>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            let message = match self.receive(deadline)? {
                Received::Message(message) => message,
                Received::Closed(reason) => {
                    return Err(ClientError::unreachable(format!(
                        "the API closed the subscription ({reason:?})"
                    )))
                }
                Received::Nothing => return Ok(None),
            };
            match message.kind.as_str() {
                "next" => {
                    let response: GraphQlResponse<F, Extensions> =
                        serde_json::from_value(message.payload)
                            .map_err(ClientError::unreachable)?;
                    if let Some(error) = response.errors.into_iter().flatten().next() {
                        return Err(refusal(error));
                    }
                    if let Some(data) = response.data {
                        return Ok(Some(data));
                    }
                }
                "error" => {
                    let errors: Vec<GraphQlError<Extensions>> =
                        serde_json::from_value(message.payload)
                            .map_err(ClientError::unreachable)?;
                    return Err(errors.into_iter().next().map_or_else(
                        || ClientError::unreachable("the API ended the subscription with an error"),
                        refusal,
                    ));
                }
                "complete" => {
                    return Err(ClientError::unreachable("the API ended the subscription"))
                }
                _ => {}
            }
        }
    }
}
