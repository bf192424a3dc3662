//! Action routing, like an API-gateway route key on `$request.body.action`: a configured
//! action forwards the client's message to a RabbitMQ queue (`amqp://QUEUE`, on `AMQP_URL`,
//! durable, publisher confirms) or an HTTP webhook (its JSON reply goes back to the client).
//! `$default` takes actions with no route; `$connect` and `$disconnect` are called around the
//! connection's life.
//!
//! The forwarded envelope: `{"connectionId","userId","receivedAt","action","body"}` where
//! `body` is the client's whole message.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection as AmqpConnection, ConnectionProperties};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use waygate_config::{Config, Route, Secret};
use waygate_proto::ErrorCode;

use crate::state::AppState;
use crate::ws::ConnShared;
use crate::ws::conn::{Connection, Flow, error_frame, frame_json};

/// Time a target gets to confirm or answer unless the route says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Routed messages one connection may have waiting for their target.
pub const MAX_IN_FLIGHT: usize = 32;
/// Largest webhook answer relayed to a client.
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("broker: {0}")]
    Amqp(String),
    #[error("webhook: {0}")]
    Http(String),
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error("the broker did not confirm the message")]
    NotConfirmed,
    #[error("no broker is configured (AMQP_URL)")]
    NoBroker,
}

pub struct Routing {
    http: waygate_http::HttpClient,
    amqp: Option<Amqp>,
}

struct Amqp {
    url: Secret,
    link: tokio::sync::Mutex<Option<AmqpLink>>,
}

struct AmqpLink {
    _connection: AmqpConnection,
    channel: Channel,
    declared: HashSet<String>,
}

impl Routing {
    pub fn new(config: &Config) -> Result<Routing, String> {
        let tls = waygate_http::client_config().map_err(|e| e.to_string())?;
        Ok(Routing {
            http: waygate_http::http_client(tls, 32),
            amqp: config.amqp_url.clone().map(|url| Amqp { url, link: tokio::sync::Mutex::new(None) }),
        })
    }

    /// The route for an action: its own, else `$default` (never for `$connect`/`$disconnect`).
    pub fn find(routes: &[Route], action: &str) -> Option<Route> {
        routes.iter().find(|r| r.action == action).cloned().or_else(|| {
            (!action.starts_with('$')).then(|| routes.iter().find(|r| r.action == "$default").cloned()).flatten()
        })
    }

    /// Delivers an envelope. `Ok(None)`: a broker confirmed it; `Ok(Some(json))`: a webhook's answer.
    pub async fn deliver(&self, route: &Route, envelope: Bytes) -> Result<Option<Value>, RouteError> {
        let timeout = route.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        if let Some(queue) = route.target.strip_prefix("amqp://") {
            tokio::time::timeout(timeout, self.publish(queue, envelope))
                .await
                .map_err(|_| RouteError::NotConfirmed)??;
            return Ok(None);
        }
        let req = waygate_http::post_json(&route.target, envelope).map_err(|e| RouteError::Http(e.to_string()))?;
        let (status, body) = waygate_http::send_within(&self.http, req, MAX_REPLY, timeout)
            .await
            .map_err(|e| RouteError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(RouteError::Status(status.as_u16()));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(Value::Null));
        }
        serde_json::from_slice(&body).map(Some).map_err(|_| RouteError::Http("the answer is not JSON".into()))
    }

    async fn publish(&self, queue: &str, body: Bytes) -> Result<(), RouteError> {
        let amqp = self.amqp.as_ref().ok_or(RouteError::NoBroker)?;
        let channel = amqp.channel_for(queue).await?;
        let props = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let sent = async {
            let confirm = channel.basic_publish("".into(), queue.into(), opts, &body, props).await?;
            confirm.await
        };
        match sent.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(_) => Err(RouteError::NotConfirmed),
            Err(e) => {
                amqp.reset().await;
                Err(RouteError::Amqp(e.to_string()))
            }
        }
    }

    /// Readiness of the broker link, when one is configured.
    pub async fn amqp_ready(&self) -> Option<bool> {
        let amqp = self.amqp.as_ref()?;
        Some(tokio::time::timeout(Duration::from_secs(2), amqp.channel_for("")).await.is_ok_and(|r| r.is_ok()))
    }
}

impl Amqp {
    /// A confirm-mode channel on a live connection, with `queue` declared durable.
    async fn channel_for(&self, queue: &str) -> Result<Channel, RouteError> {
        let mut link = self.link.lock().await;
        if link.as_ref().is_some_and(|l| !l.channel.status().connected()) {
            *link = None;
        }
        if link.is_none() {
            let err = |e: lapin::Error| RouteError::Amqp(e.to_string());
            let props = ConnectionProperties::default().with_connection_name("waygate-routes".into());
            let connection = AmqpConnection::connect(self.url.expose(), props).await.map_err(err)?;
            let channel = connection.create_channel().await.map_err(err)?;
            channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(err)?;
            *link = Some(AmqpLink { _connection: connection, channel, declared: HashSet::new() });
        }
        let l = link.as_mut().expect("link just set");
        if !queue.is_empty() && !l.declared.contains(queue) {
            l.channel
                .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
                .await
                .map_err(|e| RouteError::Amqp(e.to_string()))?;
            l.declared.insert(queue.to_owned());
        }
        Ok(l.channel.clone())
    }

    async fn reset(&self) {
        *self.link.lock().await = None;
    }
}

/// `{"connectionId","userId","receivedAt","action","body"}`.
pub fn envelope(connection_id: &str, user_id: Option<&str>, action: &str, body: &RawValue) -> Bytes {
    let env = json!({
        "connectionId": connection_id,
        "userId": user_id,
        "receivedAt": waygate_telemetry::now_rfc3339(),
        "action": action,
        "body": body,
    });
    Bytes::from(serde_json::to_vec(&env).expect("envelope serializes"))
}

/// A client action that is not built in: forward it if a route takes it.
pub async fn route_action(conn: &mut Connection, action: &str, text: &[u8], id: Option<&RawValue>) -> Flow {
    let routes = conn.state.live.routes.read().expect("routes lock").clone();
    let Some(route) = Routing::find(&routes, action) else {
        conn.send_error(id, ErrorCode::UnknownAction, &format!("unknown action {action:?}"));
        return Flow::Continue;
    };
    if conn.shared.routed_in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
        conn.send_error(id, ErrorCode::RateLimited, "too many routed messages waiting for their target");
        return Flow::Continue;
    }
    let body: &RawValue = serde_json::from_slice(text).expect("already parsed as JSON");
    let env = envelope(&conn.connection_id(), conn.shared.user_id.as_deref(), action, body);
    let id: Option<Value> = id.and_then(|raw| serde_json::from_str(raw.get()).ok());
    let (state, shared, action) = (conn.state.clone(), conn.shared.clone(), action.to_owned());
    shared.routed_in_flight.fetch_add(1, Ordering::Relaxed);
    // Forwarding runs beside the connection so a slow target does not stall its other messages;
    // answers come back through the outbox.
    conn.state.lifecycle.connections.spawn(async move {
        let result = state.routing.deliver(&route, env).await;
        shared.routed_in_flight.fetch_sub(1, Ordering::Relaxed);
        let frame = match result {
            Ok(None) => id.map(|id| frame_json(&json!({"type": "routed", "action": action, "id": id}))),
            Ok(Some(data)) => {
                let mut reply = json!({"type": "response", "action": action, "data": data});
                if let Some(id) = id {
                    reply["id"] = id;
                }
                Some(frame_json(&reply))
            }
            Err(e) => {
                tracing::warn!(action, target = %route.target, error = %e, "route failed");
                state.metrics.registry.counter(waygate_telemetry::names::ROUTE_FAILURES_TOTAL, &[]).increment(1);
                Some(error_frame(
                    id,
                    ErrorCode::RouteFailed,
                    &format!("the {action} route could not deliver the message: {e}"),
                ))
            }
        };
        if let Some(frame) = frame {
            shared.push(frame, state.live.send_queue());
        }
    });
    Flow::Continue
}

/// `$connect`: asked before the upgrade; a non-2xx answer refuses the connection.
pub async fn on_connect(
    state: &AppState,
    connection_id: &str,
    user_id: Option<&str>,
    info: Value,
) -> Result<(), crate::http::error::ApiError> {
    use crate::http::error::ApiError;
    let routes = state.live.routes.read().expect("routes lock").clone();
    let Some(route) = Routing::find(&routes, "$connect") else { return Ok(()) };
    let body = RawValue::from_string(info.to_string()).expect("JSON");
    match state.routing.deliver(&route, envelope(connection_id, user_id, "$connect", &body)).await {
        Ok(_) => Ok(()),
        Err(RouteError::Status(code)) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the connection was refused by the $connect route (HTTP {code})"),
        )),
        Err(e) => Err(ApiError::new(ErrorCode::RouteFailed, format!("the $connect route could not be reached: {e}"))),
    }
}

/// `$disconnect` for one closed connection; `true` once delivered.
pub async fn deliver_disconnect(
    state: &AppState,
    connection_id: &str,
    user_id: Option<&str>,
    code: u16,
) -> Option<bool> {
    let routes = state.live.routes.read().expect("routes lock").clone();
    let route = Routing::find(&routes, "$disconnect")?;
    let body = RawValue::from_string(json!({"action": "$disconnect", "code": code}).to_string()).expect("JSON");
    match state.routing.deliver(&route, envelope(connection_id, user_id, "$disconnect", &body)).await {
        Ok(_) => Some(true),
        Err(e) => {
            tracing::warn!(connection_id, error = %e, "$disconnect not delivered yet; will retry");
            Some(false)
        }
    }
}

/// Whether `$disconnect` is routed (connections are then recorded to guarantee delivery).
pub fn disconnect_routed(state: &AppState) -> bool {
    state.live.routes.read().expect("routes lock").iter().any(|r| r.action == "$disconnect")
}

/// Maintenance: deliver the `$disconnect`s this instance owes, adopting those of dead instances.
pub async fn deliver_owed(state: &AppState) {
    let now = waygate_telemetry::now_millis();
    match state.store.adopt_orphan_connections(&state.instance_id, now).await {
        Ok(n) if n > 0 => {
            tracing::warn!(connections = n, "adopted connections of a dead instance; delivering their $disconnect")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not adopt orphaned connections"),
    }
    let owed = match state.store.owed_disconnects(&state.instance_id, 100).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "could not read owed $disconnects");
            return;
        }
    };
    for c in owed {
        let code = u16::try_from(c.close_code).unwrap_or(1006);
        let delivered = deliver_disconnect(state, &c.id, c.user_id.as_deref(), code).await;
        let result = match delivered {
            // Delivered, or no route any more: nothing is owed.
            Some(true) | None => state.store.forget_connection(&c.id).await,
            Some(false) => state.store.close_connection(&c.id, c.close_code, now).await,
        };
        if let Err(e) = result {
            tracing::warn!(connection_id = %c.id, error = %e, "could not update the connection record");
        }
    }
}

/// Called when a connection ends.
pub async fn on_disconnect(state: &AppState, shared: &Arc<ConnShared>, recorded: bool, code: u16) {
    if !recorded {
        return;
    }
    let id = shared.id_hex();
    let now = waygate_telemetry::now_millis();
    let result = match deliver_disconnect(state, &id, shared.user_id.as_deref(), code).await {
        Some(true) | None => state.store.forget_connection(&id).await,
        Some(false) => state.store.close_connection(&id, code as i64, now).await,
    };
    if let Err(e) = result {
        tracing::warn!(connection_id = %id, error = %e, "could not update the connection record");
    }
}
