//! The HTTP side: `/graphql` (POST queries and mutations, GraphiQL on GET, subscriptions over
//! `graphql-transport-ws` on a websocket upgrade), `/healthz`, `/readyz`, `/metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Server;
use actix_web::{web, HttpRequest, HttpResponse};
use async_graphql::Data;
use async_graphql_actix_web::GraphQLSubscription;
use futures_util::StreamExt;
use tracing::info;

use crate::auth::Principal;
use crate::errors::ApiError;
use crate::schema::{schema, MarketSchema};
use crate::AppState;

/// Starts the server on `addr` (port 0 picks a free one); returns it and the bound address.
pub fn serve(
    state: Arc<AppState>,
    addr: &str,
    workers: usize,
) -> std::io::Result<(Server, std::net::SocketAddr)> {
    let schema = schema(state.clone());
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
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .route("/exports/{kind}", web::get().to(export))
            .route("/dashboard", web::get().to(dashboard))
            .route("/graphiql/{file}", web::get().to(graphiql_asset))
    })
    .workers(workers)
    .shutdown_timeout(5)
    .disable_signals();
    let server = server.bind(addr)?;
    let bound = server.addrs()[0];
    info!(%bound, "API listening");
    Ok((server.run(), bound))
}

/// The provider dashboard: one page that uses the GraphQL API with the provider's key
/// (`?key=` or asked for), subscriptions for live telemetry.
async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("dashboard.html"))
}

/// GraphiQL's files: where in a `node_modules` folder each one is, and where on the CDN.
const GRAPHIQL_FILES: &[(&str, &str, &str)] = &[
    ("graphiql.min.css", "graphiql/graphiql.min.css", "text/css"),
    ("graphiql.min.js", "graphiql/graphiql.min.js", "text/javascript"),
    ("react.production.min.js", "react/umd/react.production.min.js", "text/javascript"),
    (
        "react-dom.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
        "text/javascript",
    ),
];

/// One of GraphiQL's files, from the configured folder, or a redirect to unpkg with the
/// versions the page is written for. Only the listed names are served.
async fn graphiql_asset(state: web::Data<Arc<AppState>>, file: web::Path<String>) -> HttpResponse {
    let Some((_, path, mime)) = GRAPHIQL_FILES.iter().find(|(name, _, _)| *name == *file) else {
        return HttpResponse::NotFound().finish();
    };
    let Some(dir) = &state.config.graphiql_assets else {
        let (package, rest) = path.split_once('/').expect("package/file");
        let version = match package {
            "graphiql" => "4",
            _ => "18",
        };
        return HttpResponse::Found()
            .insert_header(("location", format!("https://unpkg.com/{package}@{version}/{rest}")))
            .finish();
    };
    match tokio::fs::read(dir.join(path)).await {
        Ok(bytes) => HttpResponse::Ok()
            .content_type(*mime)
            .insert_header(("cache-control", "max-age=3600"))
            .body(bytes),
        Err(e) => {
            tracing::warn!(file = %path, error = %e, "a GraphiQL file is missing");
            HttpResponse::NotFound().finish()
        }
    }
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

async fn authenticate(state: &Arc<AppState>, key: &str) -> Result<Principal, ApiError> {
    if let Some(principal) = state.keys.cached(key)? {
        return Ok(principal);
    }
    let key = key.to_owned();
    let st = state.clone();
    state.db(move |conn| st.keys.verify(conn, &key)).await
}

fn status_of(e: &ApiError) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(e.status())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// A GraphQL error response for a request refused before execution.
fn refused(e: &ApiError) -> HttpResponse {
    HttpResponse::build(status_of(e)).json(serde_json::json!({ "errors": [e.to_json()] }))
}

async fn graphql(
    state: web::Data<Arc<AppState>>,
    schema: web::Data<MarketSchema>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    // Read the body ourselves so an oversize one gets our error code, not actix's.
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return refused(&ApiError::validation("the request body could not be read"));
        };
        if body.len() + chunk.len() > state.config.limits.max_body {
            return refused(&ApiError::new(
                contract::ErrorCode::PayloadTooLarge,
                format!(
                    "the request body is larger than {} bytes",
                    state.config.limits.max_body
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let principal = match key_of(&req) {
        Some(key) => match authenticate(&state, key).await {
            Ok(p) => Some(p),
            Err(e) => return refused(&e),
        },
        None => None,
    };
    let who = match principal {
        Some(p) => format!("key:{}", p.key_id),
        None => format!(
            "ip:{}",
            req.peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        ),
    };
    if let Err(e) = state.admit(&who) {
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
    if !upgrade {
        return Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(include_str!("graphiql.html")));
    }
    let header_key = key_of(&req).map(str::to_owned);
    let state = state.get_ref().clone();
    GraphQLSubscription::new(schema.get_ref().clone())
        .on_connection_init(move |value| {
            let state = state.clone();
            let header_key = header_key.clone();
            async move {
                // The key comes with the websocket's headers or in the init payload as
                // `{"apiKey": "gpm_…"}` (browsers cannot set headers on a websocket).
                let key = header_key.or_else(|| {
                    value
                        .get("apiKey")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                });
                let mut data = Data::default();
                if let Some(key) = key {
                    let principal = authenticate(&state, &key)
                        .await
                        .map_err(async_graphql::Error::from)?;
                    data.insert(principal);
                }
                Ok(data)
            }
        })
        .start(&req, payload)
}

/// Ready when Postgres answers and the engine client follows the log; says how far behind each
/// projector is (events it has not applied yet).
async fn readyz(state: web::Data<Arc<AppState>>) -> HttpResponse {
    if !state.engine.healthy() {
        return HttpResponse::ServiceUnavailable().body("event log: the engine client stopped\n");
    }
    match state.db(ledger::read::projector_positions).await {
        Ok(positions) => {
            let read = state.engine.events_read();
            let mut body = format!("ready\nevents_read {read}\n");
            for (projector, next) in positions {
                let _ = writeln!(
                    body,
                    "projector {projector} behind {}",
                    read.saturating_sub(next)
                );
            }
            HttpResponse::Ok().body(body)
        }
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("{}\n", e.message)),
    }
}

async fn metrics(state: web::Data<Arc<AppState>>) -> HttpResponse {
    let m = &state.metrics;
    let mut out = String::new();
    out.push_str("# HELP gpumarket_api_request_seconds GraphQL requests answered without error, by kind (mutation: the engine round trip included).\n");
    out.push_str("# TYPE gpumarket_api_request_seconds histogram\n");
    m.queries
        .render("gpumarket_api_request_seconds", "kind=\"query\"", &mut out);
    m.mutations.render(
        "gpumarket_api_request_seconds",
        "kind=\"mutation\"",
        &mut out,
    );
    let _ = writeln!(
        out,
        "# TYPE gpumarket_api_errors_total counter\ngpumarket_api_errors_total {}",
        m.errors.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE gpumarket_api_rate_limited_total counter\ngpumarket_api_rate_limited_total {}",
        m.rate_limited.load(Ordering::Relaxed)
    );
    let read = state.engine.events_read();
    let _ = writeln!(
        out,
        "# TYPE gpumarket_api_events_read gauge\ngpumarket_api_events_read {read}"
    );
    if let Ok(positions) = state.db(ledger::read::projector_positions).await {
        out.push_str("# HELP gpumarket_projector_lag_events Events the API has read that the projector has not applied.\n# TYPE gpumarket_projector_lag_events gauge\n");
        for (projector, next) in positions {
            let _ = writeln!(
                out,
                "gpumarket_projector_lag_events{{projector=\"{projector}\"}} {}",
                read.saturating_sub(next)
            );
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

#[derive(Debug, serde::Deserialize)]
struct ExportParams {
    from: String,
    to: String,
    currency: Option<String>,
    granularity: Option<String>,
}

fn parse_time(what: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            ApiError::validation(format!("{what}: {s:?} is neither YYYY-MM-DD nor RFC 3339"))
        })
}

/// `std::io::Write` into the response stream: the export writes on a blocking thread, each
/// 64 KiB chunk goes to the client as it is made, and a slow client slows the export down
/// (the channel is bounded) instead of the period piling up in memory.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<web::Bytes, std::io::Error>>,
}

impl ChunkWriter {
    const CHUNK: usize = 64 << 10;

    fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(Self::CHUNK),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.ship()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ship()
    }
}

/// `GET /exports/{journal|focus|reconciliation}?from=…&to=…` (finance and admin): the
/// ledger's finance exports for a period as CSV, streamed.
async fn export(
    state: web::Data<Arc<AppState>>,
    req: HttpRequest,
    kind: web::Path<String>,
    params: web::Query<ExportParams>,
) -> HttpResponse {
    match export_response(&state, &req, &kind, &params).await {
        Ok(response) => response,
        Err(e) => HttpResponse::build(status_of(&e))
            .json(serde_json::json!({"code": e.code, "message": e.message})),
    }
}

async fn export_response(
    state: &Arc<AppState>,
    req: &HttpRequest,
    kind: &str,
    params: &ExportParams,
) -> Result<HttpResponse, ApiError> {
    use ledger::export::{self, Granularity, Period};
    let key = key_of(req).ok_or_else(|| ApiError::unauthenticated("exports need an API key"))?;
    let principal = authenticate(state, key).await?;
    principal.require(
        &[crate::auth::Role::Finance, crate::auth::Role::Admin],
        "exports",
    )?;
    state.admit(&format!("key:{}", principal.key_id))?;
    let period = Period::new(
        parse_time("from", &params.from)?,
        parse_time("to", &params.to)?,
    )
    .map_err(|_| ApiError::validation("`from` must be before `to`"))?;
    let filename = format!(
        "attachment; filename=\"{kind}-{}-{}.csv\"",
        period.from().format("%Y%m%d"),
        period.to().format("%Y%m%d")
    );
    if kind == "reconciliation" {
        let granularity = match params.granularity.as_deref() {
            None | Some("day") => Granularity::Day,
            Some("month") => Granularity::Month,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "granularity: {other:?} is not day or month"
                )))
            }
        };
        // The report is per period and account, small next to the journal: built whole so
        // its break count can go in a header.
        let (csv, breaks) = state
            .db(move |conn| {
                let report = export::reconciliation(conn, period, granularity)?;
                let mut csv = Vec::new();
                report
                    .write_csv(&mut csv)
                    .map_err(|e| ApiError::internal(format!("writing the report: {e}")))?;
                Ok::<_, ApiError>((csv, report.breaks.len()))
            })
            .await?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("content-disposition", filename))
            .insert_header(("x-reconciliation-breaks", breaks.to_string()))
            .body(csv));
    }
    let currency = params.currency.clone().unwrap_or_else(|| "USD".to_owned());
    match kind {
        "journal" => {}
        "focus" => {
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ApiError::validation(format!(
                    "currency: an ISO 4217 code such as USD (got {currency:?})"
                )));
            }
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no export {kind:?} (journal, focus, reconciliation)"
            )))
        }
    }
    let journal = kind == "journal";
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let pool = state.pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buf: Vec::with_capacity(ChunkWriter::CHUNK),
            tx: tx.clone(),
        };
        let result = pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                if journal {
                    export::journal_csv(&mut conn, period, &mut out)
                } else {
                    export::focus_csv(&mut conn, period, &currency, &mut out)
                }
                .map_err(|e| e.to_string())
            })
            .and_then(|_| std::io::Write::flush(&mut out).map_err(|e| e.to_string()));
        if let Err(e) = result {
            // Cut the stream short: the client sees an incomplete body, never a silent end.
            tracing::error!(error = %e, "export failed mid-stream");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("content-disposition", filename))
        .streaming(body))
}
