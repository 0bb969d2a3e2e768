//! `/exports/{kind}`: the ledger's finance files for a period, streamed as CSV.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use super::{keyed_caller, status_of};
use crate::errors::ApiError;
use crate::AppState;

#[derive(Debug, serde::Deserialize)]
pub(super) struct ExportParams {
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
pub(super) async fn export(
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
    let principal = keyed_caller(state, req, "exports").await?;
    principal.require(
        &[crate::auth::Role::Finance, crate::auth::Role::Admin],
        "exports",
    )?;
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
                let report = export::reconciliation(conn, period, granularity, None)?;
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
