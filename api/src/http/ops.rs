//! What operators and people look at: `/readyz`, `/metrics`, the provider dashboard and
//! GraphiQL's files.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use crate::AppState;

/// The provider dashboard: one page that uses the GraphQL API with the provider's key
/// (`?key=` or asked for), subscriptions for live telemetry.
pub(super) async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("dashboard.html"))
}

/// GraphiQL's files: where in a `node_modules` folder each one is, and where on the CDN.
const GRAPHIQL_FILES: &[(&str, &str, &str)] = &[
    ("graphiql.min.css", "graphiql/graphiql.min.css", "text/css"),
    (
        "graphiql.min.js",
        "graphiql/graphiql.min.js",
        "text/javascript",
    ),
    (
        "react.production.min.js",
        "react/umd/react.production.min.js",
        "text/javascript",
    ),
    (
        "react-dom.production.min.js",
        "react-dom/umd/react-dom.production.min.js",
        "text/javascript",
    ),
];

/// One of GraphiQL's files, from the configured folder, or a redirect to unpkg with the
/// versions the page is written for. Only the listed names are served.
pub(super) async fn graphiql_asset(
    state: web::Data<Arc<AppState>>,
    file: web::Path<String>,
) -> HttpResponse {
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
            .insert_header((
                "location",
                format!("https://unpkg.com/{package}@{version}/{rest}"),
            ))
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

/// Ready when Postgres answers and the engine client follows the log; says how far behind each
/// projector is (events it has not applied yet).
pub(super) async fn readyz(state: web::Data<Arc<AppState>>) -> HttpResponse {
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

pub(super) async fn metrics(state: web::Data<Arc<AppState>>) -> HttpResponse {
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
