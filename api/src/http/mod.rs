//! The HTTP side: `/graphql` (POST queries and mutations as `application/json`, GraphiQL on
//! GET, subscriptions over `graphql-transport-ws` on a websocket upgrade: [`ws`]),
//! `/healthz`, `/readyz`, `/metrics`, the dashboard and GraphiQL's files ([`ops`]) and the
//! finance exports ([`exports`]).
//!
//! Every request is bounded: headers must arrive within [`HEADER_TIMEOUT`], a body within
//! [`crate::Limits::body_timeout`] and [`crate::Limits::max_body`] bytes; authentication
//! failures are throttled per address and per key id before any hash is computed.

pub(crate) mod blobs;
mod exports;
mod ops;
mod ws;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{web, HttpRequest, HttpResponse};
use contract::ErrorCode;
use futures_util::StreamExt;
use tracing::info;

use crate::auth::Principal;
use crate::errors::ApiError;
use crate::schema::{schema, MarketSchema};
use crate::AppState;

/// The longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the server on `addr` (port 0 picks a free one); returns it and the bound address.
pub fn serve(
    state: Arc<AppState>,
    addr: &str,
    workers: usize,
) -> std::io::Result<(Server, std::net::SocketAddr)> {
    let schema = schema(state.clone());
    if let Some(every) = state.config.reputation_every {
        actix_web::rt::spawn(crate::reputation::publish(state.clone(), every));
    }
    if let Some(every) = state.config.blob_expiry_every {
        actix_web::rt::spawn(blobs::upkeep(state.clone(), every));
    }
    if let Some(every) = state.config.render_every {
        actix_web::rt::spawn(crate::render::drive(state.clone(), every));
    }
    if let Some(checker) = &state.config.checker {
        actix_web::rt::spawn(crate::checker::drive(state.clone(), checker.clone()));
    }
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(schema.clone()))
            .route("/graphql", web::post().to(graphql))
            .route("/graphql", web::get().to(graphiql_or_ws))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok\n") }),
            )
            .route("/readyz", web::get().to(ops::readyz))
            .route("/metrics", web::get().to(ops::metrics))
            .route("/exports/{kind}", web::get().to(exports::export))
            .route("/blobs", web::put().to(blobs::put))
            .route("/blobs/{digest}", web::get().to(blobs::get))
            .route("/dashboard", web::get().to(ops::dashboard))
            .route("/graphiql/{file}", web::get().to(ops::graphiql_asset))
    })
    .workers(workers)
    .client_request_timeout(HEADER_TIMEOUT)
    .shutdown_timeout(5)
    .disable_signals();
    let server = server.bind(addr)?;
    let bound = server.addrs()[0];
    info!(%bound, "API listening");
    Ok((server.run(), bound))
}

/// The key from `Authorization: Bearer …` or `X-Api-Key`, if any.
fn key_of(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// Where a request comes from, as the throttles count it.
fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The key's principal. A key verified recently costs a map lookup; any other costs an
/// argon2 check, so failures are throttled, per address and per key id, before it.
async fn authenticate(
    state: &Arc<AppState>,
    key: &str,
    address: &str,
) -> Result<Principal, ApiError> {
    if let Some(principal) = state.keys.cached(key)? {
        return Ok(principal);
    }
    let key_id = crate::auth::key_id(key)?;
    let counted = [format!("ip:{address}"), format!("key:{key_id}")];
    // A key verified before is checked without hashing: an attacker's failures on its id
    // must not lock its holder out.
    let throttled = !state.keys.known(key);
    for who in counted.iter().filter(|_| throttled) {
        state.failed_auth.check(who).map_err(|retry| {
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many failed authentications; retry in {} ms",
                    retry.as_millis()
                ),
            )
        })?;
    }
    let (owned, st) = (key.to_owned(), state.clone());
    let verified = state.db(move |conn| st.keys.verify(conn, &owned)).await;
    if matches!(&verified, Err(e) if e.code == ErrorCode::Unauthenticated) {
        for who in &counted {
            // Empty already: the next attempt waits for the refill either way.
            let _ = state.failed_auth.take(who);
        }
    }
    verified
}

/// The caller of a route that is not GraphQL (`what`, for the message): its key verified and
/// a request taken from its rate.
async fn keyed_caller(
    state: &Arc<AppState>,
    req: &HttpRequest,
    what: &str,
) -> Result<Principal, ApiError> {
    let key =
        key_of(req).ok_or_else(|| ApiError::unauthenticated(format!("{what} need an API key")))?;
    let principal = authenticate(state, key, &peer(req)).await?;
    state
        .requests
        .take(&format!("key:{}", principal.key_id))
        .map_err(|retry| {
            ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry in {} ms", retry.as_millis()),
            )
        })?;
    Ok(principal)
}

fn status_of(e: &ApiError) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(e.status())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// A GraphQL error response for a request refused before execution.
fn refused(e: &ApiError) -> HttpResponse {
    HttpResponse::build(status_of(e)).json(serde_json::json!({ "errors": [e.to_json()] }))
}

/// Only JSON is executed: a cross-site form can send `text/plain` (or nothing) without a
/// preflight, and must not be able to run a mutation with a browser's credentials.
fn json_body(req: &HttpRequest) -> Result<(), ApiError> {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/graphql-response+json")
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("send the request as application/json (got {content_type:?})"),
        ))
    }
}

/// Reads the body ourselves so an oversize or slow one gets our error code, not actix's.
async fn read_body(
    state: &AppState,
    payload: &mut web::Payload,
) -> Result<web::BytesMut, ApiError> {
    let (max, timeout) = (
        state.config.limits.max_body,
        state.config.limits.body_timeout,
    );
    let reading = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::validation("the request body could not be read"))?;
            if body.len() + chunk.len() > max {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the request body is larger than {max} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, reading).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the body did not arrive within {} ms", timeout.as_millis()),
        )
    })?
}

/// Takes one GraphQL request (over HTTP, or an operation on a websocket) from `who`'s rate.
fn take_request(state: &AppState, who: &str) -> Result<(), ApiError> {
    state.requests.take(who).map_err(|retry| {
        state.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        let limits = &state.config.limits;
        ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "more than {} requests/s (burst {}); retry in {} ms",
                limits.rate_per_sec,
                limits.burst,
                retry.as_millis()
            ),
        )
    })
}

async fn graphql(
    state: web::Data<Arc<AppState>>,
    schema: web::Data<MarketSchema>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    if let Err(e) = json_body(&req) {
        return refused(&e);
    }
    let body = match read_body(&state, &mut payload).await {
        Ok(body) => body,
        Err(e) => return refused(&e),
    };
    let address = peer(&req);
    let principal = match key_of(&req) {
        Some(key) => match authenticate(&state, key, &address).await {
            Ok(p) => Some(p),
            Err(e) => return refused(&e),
        },
        None => None,
    };
    let who = match principal {
        Some(p) => format!("key:{}", p.key_id),
        None => format!("ip:{address}"),
    };
    if let Err(e) = take_request(&state, &who) {
        return refused(&e);
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(&ApiError::validation(format!(
                "the body is not a GraphQL request: {e}"
            )))
        }
    };
    let request = match principal {
        Some(p) => request.data(p),
        None => request,
    };
    let response = schema.execute(request).await;
    let is_mutation = body.windows(8).any(|w| w == b"mutation");
    if response.errors.is_empty() {
        let histogram = if is_mutation {
            &state.metrics.mutations
        } else {
            &state.metrics.queries
        };
        histogram.observe(started.elapsed());
    } else {
        state.metrics.errors.fetch_add(1, Ordering::Relaxed);
    }
    HttpResponse::Ok().json(response)
}

async fn graphiql_or_ws(
    state: web::Data<Arc<AppState>>,
    schema: web::Data<MarketSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let upgrade = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return ws::subscriptions(state, schema, req, payload).await;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("graphiql.html")))
}
