//! The admin HTTP routes of users and rooms, and the `roam-server admin users|rooms …`
//! commands, which call them.
//!
//! | route | command |
//! |---|---|
//! | `GET /admin/v1/users?q=&limit=&cursor=` | `admin users list [--q] [--limit] [--cursor]` |
//! | `GET /admin/v1/users/{user}` | `admin users show <user>` |
//! | `POST /admin/v1/users/{user}/export` `{"to"}` | `admin users export <user> --to <file>` |
//! | `POST /admin/v1/users/{user}/erase` `{"rooms"}` | `admin users erase <user> --rooms transfer\|delete` |
//! | `POST /admin/v1/users/{user}/suspend` | `admin users suspend <user>` |
//! | `POST /admin/v1/users/{user}/unsuspend` | `admin users unsuspend <user>` |
//! | `GET /admin/v1/rooms?after=&limit=` | `admin rooms list [--after] [--limit]` |
//! | `GET /admin/v1/rooms/{room}` | `admin rooms show <room>` |
//! | `DELETE /admin/v1/rooms/{room}` | `admin rooms delete <room>` |
//! | `POST /admin/v1/rooms/{room}/transfer` `{"to"?}` | `admin rooms transfer <room> [--to <user>]` |

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::users::{self, EraseRequest, OwnedRooms};
use super::{authorized, export, unauthorized, AdminError, ExportRequest};
use crate::config::{AdminCommand, Config, RoomCommand, UserCommand};
use crate::AppState;

/// How long the command waits for an answer (an erase rewrites the database file).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

pub(super) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/v1/users", get(list_users))
        .route("/admin/v1/users/{user}", get(show_user))
        .route("/admin/v1/users/{user}/export", post(export_user))
        .route("/admin/v1/users/{user}/erase", post(erase_user))
        .route("/admin/v1/users/{user}/suspend", post(suspend_user))
        .route("/admin/v1/users/{user}/unsuspend", post(unsuspend_user))
        .route("/admin/v1/rooms", get(list_rooms))
        .route("/admin/v1/rooms/{room}", get(show_room).delete(delete_room))
        .route("/admin/v1/rooms/{room}/transfer", post(transfer_room))
        .route_layer(middleware::from_fn_with_state(state, guard))
}

async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !authorized(&state, req.headers()) {
        return unauthorized();
    }
    next.run(req).await
}

fn answer<T: Serialize>(status: StatusCode, r: Result<T, AdminError>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UserList {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Items a listing answers when the request does not say.
const DEFAULT_LIMIT: u32 = 50;

async fn list_users(State(state): State<AppState>, Query(q): Query<UserList>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    answer(
        StatusCode::OK,
        users::list_users(&state, q.q, q.cursor, limit).await,
    )
}

async fn show_user(State(state): State<AppState>, Path(user): Path<String>) -> Response {
    answer(StatusCode::OK, users::show_user(&state, &user).await)
}

async fn export_user(
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(req): Json<ExportRequest>,
) -> Response {
    answer(StatusCode::CREATED, export(&state, &user, &req.to).await)
}

async fn erase_user(
    State(state): State<AppState>,
    Path(user): Path<String>,
    body: Option<Json<EraseRequest>>,
) -> Response {
    let rooms = body.map(|Json(b)| b.rooms).unwrap_or_default();
    answer(StatusCode::OK, users::erase(&state, &user, rooms).await)
}

async fn suspend_user(State(state): State<AppState>, Path(user): Path<String>) -> Response {
    answer(StatusCode::OK, users::suspend(&state, &user, true).await)
}

async fn unsuspend_user(State(state): State<AppState>, Path(user): Path<String>) -> Response {
    answer(StatusCode::OK, users::suspend(&state, &user, false).await)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RoomList {
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_rooms(State(state): State<AppState>, Query(q): Query<RoomList>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let rooms = users::list_rooms(&state, &q.after, limit)
        .await
        .map(|rooms| serde_json::json!({ "rooms": rooms }));
    answer(StatusCode::OK, rooms)
}

async fn show_room(State(state): State<AppState>, Path(room): Path<String>) -> Response {
    answer(StatusCode::OK, users::show_room(&state, &room).await)
}

async fn delete_room(State(state): State<AppState>, Path(room): Path<String>) -> Response {
    let done = users::delete_room(&state, &room)
        .await
        .map(|()| serde_json::json!({ "deleted": room }));
    answer(StatusCode::OK, done)
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    #[serde(default)]
    to: Option<String>,
}

async fn transfer_room(
    State(state): State<AppState>,
    Path(room): Path<String>,
    body: Option<Json<TransferRequest>>,
) -> Response {
    let to = body.and_then(|Json(b)| b.to);
    answer(
        StatusCode::OK,
        users::transfer_room(&state, &room, to).await,
    )
}

/// Calls the running server's admin interface: `method` on `path` (with its query), with a
/// JSON body or none; answers the JSON it sent back.
pub async fn call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, AdminError> {
    let token = config.admin_token.as_ref().ok_or_else(|| {
        AdminError::Refused("set the admin token (ROAM_ADMIN_TOKEN or --admin-token)".into())
    })?;
    let url = format!("http://{}{path}", config.admin_listen);
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token.expose())
        .timeout(COMMAND_TIMEOUT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| AdminError::Failed(format!("{url}: {e}")))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| AdminError::Failed(format!("{url}: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    let why = format!(
        "{status}: {}",
        body["error"].as_str().unwrap_or("no reason given")
    );
    Err(match status {
        StatusCode::NOT_FOUND => AdminError::NotFound(why),
        s if s.is_server_error() => AdminError::Failed(why),
        _ => AdminError::Refused(why),
    })
}

/// A path segment, percent-encoded (user ids and room names may hold `/`, `?`, `%`, …).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one `roam-server admin …` command against the running server; answers what it said.
pub async fn run(config: &Config, command: AdminCommand) -> Result<Value, AdminError> {
    use reqwest::Method;
    match command {
        AdminCommand::Backup { to } => {
            let b = super::request_backup(config, to).await?;
            serde_json::to_value(b).map_err(super::failed)
        }
        AdminCommand::Users { action } => match action {
            UserCommand::List { q, limit, cursor } => {
                let mut path = format!("/admin/v1/users?limit={limit}&q={}", segment(&q));
                if let Some(c) = cursor {
                    path.push_str(&format!("&cursor={}", segment(&c)));
                }
                call(config, Method::GET, &path, None).await
            }
            UserCommand::Show { user } => {
                let path = format!("/admin/v1/users/{}", segment(&user));
                call(config, Method::GET, &path, None).await
            }
            UserCommand::Export { user, to } => {
                let to = std::path::absolute(&to).map_err(super::failed)?;
                let path = format!("/admin/v1/users/{}/export", segment(&user));
                let body = serde_json::json!({ "to": to });
                call(config, Method::POST, &path, Some(body)).await
            }
            UserCommand::Erase { user, rooms } => {
                let rooms = match rooms.as_str() {
                    "transfer" => OwnedRooms::Transfer,
                    "delete" => OwnedRooms::Delete,
                    other => {
                        return Err(AdminError::Refused(format!(
                            "--rooms is transfer or delete, not {other:?}"
                        )))
                    }
                };
                let path = format!("/admin/v1/users/{}/erase", segment(&user));
                let body = serde_json::to_value(EraseRequest { rooms }).map_err(super::failed)?;
                call(config, Method::POST, &path, Some(body)).await
            }
            UserCommand::Suspend { user } => {
                let path = format!("/admin/v1/users/{}/suspend", segment(&user));
                call(config, Method::POST, &path, None).await
            }
            UserCommand::Unsuspend { user } => {
                let path = format!("/admin/v1/users/{}/unsuspend", segment(&user));
                call(config, Method::POST, &path, None).await
            }
        },
        AdminCommand::Rooms { action } => match action {
            RoomCommand::List { after, limit } => {
                let path = format!("/admin/v1/rooms?limit={limit}&after={}", segment(&after));
                call(config, Method::GET, &path, None).await
            }
            RoomCommand::Show { room } => {
                let path = format!("/admin/v1/rooms/{}", segment(&room));
                call(config, Method::GET, &path, None).await
            }
            RoomCommand::Delete { room } => {
                let path = format!("/admin/v1/rooms/{}", segment(&room));
                call(config, Method::DELETE, &path, None).await
            }
            RoomCommand::Transfer { room, to } => {
                let path = format!("/admin/v1/rooms/{}/transfer", segment(&room));
                let body = serde_json::json!({ "to": to });
                call(config, Method::POST, &path, Some(body)).await
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("a-b.c_d~9"), "a-b.c_d~9");
        assert_eq!(segment("a/b?c%"), "a%2Fb%3Fc%25");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
