//! GraphQL over a websocket at `/graphql`, in the `graphql-transport-ws` protocol:
//! subscriptions, and queries and mutations too, so a bot that holds a socket places and
//! cancels without paying for an HTTP request each time.
//!
//! Each operation (`subscribe` message) takes a request from the same per-key rate as an
//! HTTP request does; one over the rate is answered with the protocol's `error` message
//! (code `RATE_LIMITED`) and not executed, and the socket stays open.
//!
//! async-graphql speaks the protocol; this module carries its frames over actix-ws and
//! closes the socket with the protocol's own codes: 4401 when the key is missing its mark
//! (unknown, malformed, revoked, or a subscription before the handshake), 4403 when the
//! key may not (a refused role, or a key revoked while its subscriptions run), 4400 for a
//! frame that is not a protocol message, 4429 for too many failed authentications. An
//! open socket's key is checked again every second, so a revocation ends its
//! subscriptions within the same bound as new requests ([`crate::auth::RECHECK_AFTER`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::Data;
use contract::ErrorCode;
use futures_util::StreamExt;

use super::{authenticate, key_of, peer, take_request};
use crate::schema::MarketSchema;
use crate::AppState;

/// The close code for a refused connection, by the refusal's error code.
fn refusal_close(code: Option<ErrorCode>) -> u16 {
    match code {
        Some(ErrorCode::Forbidden) => 4403,
        Some(ErrorCode::RateLimited) => 4429,
        _ => 4401,
    }
}

/// async-graphql's own close codes in the protocol's terms: 1002 is a refused init (which
/// [`refusal_close`] names) or a frame it could not read, 1011 a subscription before the
/// handshake.
fn protocol_close(code: u16, refused: Option<ErrorCode>) -> u16 {
    match (code, refused) {
        (1002, Some(refusal)) => refusal_close(Some(refusal)),
        (1002, None) => 4400,
        (1011, _) => 4401,
        (other, _) => other,
    }
}

/// The key in a `connection_init` payload: `{"apiKey": "gpm_…"}` (browsers cannot set
/// headers on a websocket) or `{"Authorization": "Bearer gpm_…"}` as many clients send it.
fn init_key(payload: &serde_json::Value) -> Option<String> {
    payload
        .get("apiKey")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| {
            ["Authorization", "authorization"]
                .iter()
                .find_map(|name| payload.get(*name).and_then(|v| v.as_str()))
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|k| k.trim().to_owned())
        })
}

/// The protocol's `error` answer to an operation frame when `who` is over its rate (the
/// operation is then not executed); `None` for any other frame, or when within the rate.
fn over_rate(state: &AppState, who: &str, frame: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        id: Option<String>,
    }
    let frame: Frame = serde_json::from_str(frame).ok()?;
    if frame.kind != "subscribe" {
        return None;
    }
    let e = take_request(state, who).err()?;
    Some(serde_json::json!({"id": frame.id, "type": "error", "payload": [e.to_json()]}).to_string())
}

pub async fn subscriptions(
    state: web::Data<Arc<AppState>>,
    schema: web::Data<MarketSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let (mut response, mut session, mut frames) = actix_ws::handle(&req, payload)?;
    response.headers_mut().insert(
        actix_web::http::header::SEC_WEBSOCKET_PROTOCOL,
        actix_web::http::header::HeaderValue::from_static("graphql-transport-ws"),
    );
    let state = state.get_ref().clone();
    let header_key = key_of(&req).map(str::to_owned);
    let address = peer(&req);
    // What the init closure learned, for the pump: the key it accepted with its id, or why
    // it refused.
    let accepted: Arc<Mutex<Option<(String, i64)>>> = Arc::default();
    let refused: Arc<Mutex<Option<ErrorCode>>> = Arc::default();
    let (to_graphql, incoming) = tokio::sync::mpsc::unbounded_channel::<String>();
    let init = {
        let (state, accepted, refused) = (state.clone(), accepted.clone(), refused.clone());
        let address = address.clone();
        move |payload: serde_json::Value| async move {
            let mut data = Data::default();
            if let Some(key) = header_key.or_else(|| init_key(&payload)) {
                match authenticate(&state, &key, &address).await {
                    Ok(principal) => {
                        *accepted.lock().expect("accepted lock") = Some((key, principal.key_id));
                        data.insert(principal);
                    }
                    Err(e) => {
                        *refused.lock().expect("refused lock") = Some(e.code);
                        return Err(async_graphql::Error::from(e));
                    }
                }
            }
            Ok(data)
        }
    };
    let incoming = futures_util::stream::unfold(incoming, |mut rx| async move {
        rx.recv().await.map(|text| (text, rx))
    });
    let protocol = WebSocket::new(
        schema.get_ref().clone(),
        incoming,
        WebSocketProtocols::GraphQLWS,
    )
    .on_connection_init(init);
    actix_web::rt::spawn(async move {
        let mut protocol = std::pin::pin!(protocol);
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        let close = loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let who = accepted
                            .lock()
                            .expect("accepted lock")
                            .as_ref()
                            .map_or_else(|| format!("ip:{address}"), |(_, id)| format!("key:{id}"));
                        if let Some(refusal) = over_rate(&state, &who, &text) {
                            if session.text(refusal).await.is_err() {
                                break None;
                            }
                        } else if to_graphql.send(text.to_string()).is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Ok(Message::Binary(_))) => {
                        break Some((4400, "graphql-transport-ws sends text frames".to_owned()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some((4400, format!("not a websocket frame: {e}"))),
                },
                out = protocol.next() => match out {
                    Some(WsMessage::Text(text)) => {
                        if session.text(text).await.is_err() {
                            break None;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => {
                        let refusal = *refused.lock().expect("refused lock");
                        break Some((protocol_close(code, refusal), reason));
                    }
                    None => break None,
                },
                _ = recheck.tick() => {
                    let key = accepted.lock().expect("accepted lock").clone();
                    if let Some((key, _)) = key {
                        if let Err(e) = authenticate(&state, &key, &address).await {
                            if e.code == ErrorCode::Unauthenticated {
                                break Some((4403, "the key was revoked".to_owned()));
                            }
                        }
                    }
                }
            }
        };
        let reason = close.map(|(code, description)| CloseReason {
            code: CloseCode::Other(code),
            description: Some(description),
        });
        let _ = session.close(reason).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_close_with_the_protocol_s_codes() {
        assert_eq!(protocol_close(1002, Some(ErrorCode::Unauthenticated)), 4401);
        assert_eq!(protocol_close(1002, Some(ErrorCode::Forbidden)), 4403);
        assert_eq!(protocol_close(1002, Some(ErrorCode::RateLimited)), 4429);
        assert_eq!(protocol_close(1002, None), 4400, "an unreadable frame");
        assert_eq!(
            protocol_close(1011, None),
            4401,
            "subscribed before the ack"
        );
        assert_eq!(protocol_close(3008, None), 3008);
    }

    #[test]
    fn the_key_comes_from_either_init_form() {
        let key = "gpm_1_x";
        assert_eq!(
            init_key(&serde_json::json!({"apiKey": key})).as_deref(),
            Some(key)
        );
        assert_eq!(
            init_key(&serde_json::json!({"Authorization": format!("Bearer {key}")})).as_deref(),
            Some(key)
        );
        assert_eq!(
            init_key(&serde_json::json!({"authorization": key})),
            None,
            "no Bearer"
        );
    }
}
