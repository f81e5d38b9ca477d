//! Push registrations and notification modes over REST (protocol §8, §11): the same mutations
//! as the socket's `push.register`, `push.unregister` and `push.set_mode`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use roam_proto::{Mutation, PushDevice, PushMode, PushPlatform, PushSettings};
use serde::Deserialize;

use super::{applied, IdemKey, J};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/push/devices", get(devices))
        .route(
            "/v1/push/devices/{device}",
            put(register).delete(unregister),
        )
        .route("/v1/push/settings", get(settings).put(set_default))
        .route("/v1/rooms/{room}/push-mode", put(set_room))
}

#[derive(Debug, serde::Serialize)]
struct Devices {
    items: Vec<PushDevice>,
}

async fn devices(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Devices>> {
    let items = s.service.store.push_devices(&caller.user).await?;
    Ok(Json(Devices { items }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    platform: PushPlatform,
    token: String,
    app_id: String,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    sandbox: bool,
}

async fn register(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(device): Path<String>,
    J(b): J<RegisterBody>,
) -> ApiResult<Response> {
    let m = Mutation::RegisterPush {
        device,
        platform: b.platform,
        token: b.token,
        app_id: b.app_id,
        locale: b.locale,
        sandbox: b.sandbox,
    };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

async fn unregister(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(device): Path<String>,
) -> ApiResult<Response> {
    let m = Mutation::UnregisterPush { device };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

async fn settings(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<PushSettings>> {
    Ok(Json(s.service.store.push_settings(&caller.user).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: PushMode,
}

async fn set_default(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    J(b): J<ModeBody>,
) -> ApiResult<Response> {
    let m = Mutation::SetPushMode {
        room: None,
        mode: b.mode,
    };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}

async fn set_room(
    State(s): State<AppState>,
    caller: Caller,
    IdemKey(key): IdemKey,
    Path(room): Path<String>,
    J(b): J<ModeBody>,
) -> ApiResult<Response> {
    let m = Mutation::SetPushMode {
        room: Some(room),
        mode: b.mode,
    };
    Ok(applied(s.service.mutate(&caller.user, &key, m).await?))
}
