//! `GET /v1/server/ha/persist/export`: a zip of the store's coordination records, for backups
//! and for support (Brooklyn's `curl … > backup.zip`). `POST …/persist/import` is refused:
//! writing old records back would hand out old epochs and replay old terms (DESIGN §3.10).

use crate::ApiState;
use crate::api::CanChange;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Write as _;
use std::time::SystemTime;
use tenure_election::clock;
use tenure_election::records::{CLUSTER_KEY, EPOCHS_PREFIX, NODES_PREFIX};
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError};

/// The name of the summary inside the zip: what was exported, from where, and what could not be.
pub const MANIFEST: &str = "export.json";

/// Reads every record and writes the zip. Blocking: run it off the async workers.
fn build_zip(store: &dyn Store, node: &str, plane_id: &str) -> Result<Vec<u8>, String> {
    let mut keys = vec![CLUSTER_KEY.to_string(), LEASE_KEY.to_string()];
    for prefix in [EPOCHS_PREFIX, NODES_PREFIX] {
        keys.extend(
            store
                .list(prefix)
                .map_err(|e| format!("cannot list {prefix}: {e}"))?,
        );
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut unreadable = Vec::new();
    let mut absent = Vec::new();
    let mut count = 0usize;
    for key in &keys {
        match store.read(key) {
            Ok(ReadResult::Present(rec)) => {
                let mut options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .unix_permissions(0o644);
                if let Some(t) = rec.modified.and_then(zip_time) {
                    options = options.last_modified_time(t);
                }
                zip.start_file(key.as_str(), options)
                    .and_then(|()| zip.write_all(&rec.bytes).map_err(Into::into))
                    .map_err(|e| format!("cannot write {key} into the zip: {e}"))?;
                count += 1;
            }
            Ok(ReadResult::Absent) => absent.push(key.clone()),
            Ok(ReadResult::Unreadable { reason, .. }) | Err(StoreError::Corrupt { reason, .. }) => {
                unreadable.push(serde_json::json!({ "key": key, "reason": reason }))
            }
            Err(e) => return Err(format!("cannot read {key}: {e}")),
        }
    }
    let manifest = serde_json::json!({
        "planeId": plane_id,
        "exportedBy": node,
        "exportedAtUtc": clock::wall_millis(),
        "store": store.describe(),
        "records": count,
        "absent": absent,
        "unreadable": unreadable,
    });
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644);
    zip.start_file(MANIFEST, options)
        .and_then(|()| {
            zip.write_all(manifest.to_string().as_bytes())
                .map_err(Into::into)
        })
        .map_err(|e| format!("cannot write {MANIFEST}: {e}"))?;
    zip.finish()
        .map(|c| c.into_inner())
        .map_err(|e| format!("cannot finish the zip: {e}"))
}

fn zip_time(t: SystemTime) -> Option<zip::DateTime> {
    let utc: chrono::DateTime<chrono::Utc> = t.into();
    zip::DateTime::try_from(utc.naive_utc()).ok()
}

/// One export at a time: each reads every record, and a hung store must not pile them up.
static EXPORTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(crate) async fn export(_: CanChange, State(state): State<ApiState>) -> Response {
    let Some(store) = state.inner.store.clone() else {
        return ApiError::unavailable("this node serves no store to export").into_response();
    };
    let Ok(_permit) = EXPORTING.try_acquire() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "an export is already running on this node: try again when it ends",
        )
        .into_response();
    };
    let snap = state.snapshot();
    let (node, plane) = (snap.own_name.clone(), snap.plane_id.clone());
    let work = tokio::task::spawn_blocking({
        let node = node.clone();
        move || build_zip(store.as_ref(), &node, &plane)
    });
    let zip = match tokio::time::timeout(state.command_timeout, work).await {
        Ok(Ok(Ok(zip))) => zip,
        Ok(Ok(Err(e))) => {
            return ApiError::unavailable(format!("the export failed: {e}")).into_response();
        }
        Ok(Err(_)) => {
            return ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
        Err(_) => {
            return ApiError::unavailable(format!(
                "the store did not answer within {}: the export was abandoned",
                humantime::format_duration(state.command_timeout)
            ))
            .into_response();
        }
    };
    let disposition = format!(
        "attachment; filename=\"tenure-{node}-{}.zip\"",
        clock::wall_millis()
    );
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/zip"),
        )],
        zip,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

pub(crate) async fn import(_: CanChange) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not-provided",
        "tenure does not import coordination state: writing old records back would hand out old epochs and replay ended terms. To rebuild a lost store, run `tenure init` on an empty one; the nodes rejoin by themselves",
    )
}
