//! Metric names of the ingest and worker processes (documented in docs/operations.md).

pub const INGEST_EVENTS_RECEIVED_TOTAL: &str = "waygate_ingest_events_received_total";
pub const INGEST_EVENTS_PUBLISHED_TOTAL: &str = "waygate_ingest_events_published_total";
pub const INGEST_EVENTS_CONFIRMED_TOTAL: &str = "waygate_ingest_events_confirmed_total";
pub const INGEST_EVENTS_NACKED_TOTAL: &str = "waygate_ingest_events_nacked_total";
pub const INGEST_EVENTS_UNROUTABLE_TOTAL: &str = "waygate_ingest_events_unroutable_total";
pub const INGEST_BUFFER_DEPTH: &str = "waygate_ingest_buffer_depth";
pub const INGEST_BUFFER_CAPACITY: &str = "waygate_ingest_buffer_capacity";
pub const INGEST_INFLIGHT: &str = "waygate_ingest_inflight";
pub const INGEST_BACKPRESSURE_TOTAL: &str = "waygate_ingest_backpressure_events_total";
pub const INGEST_SHARDS_CONNECTED: &str = "waygate_ingest_shards_connected";
pub const INGEST_GATEWAY_CONNECTS_TOTAL: &str = "waygate_ingest_gateway_connects_total";
pub const INGEST_HEARTBEAT_RTT: &str = "waygate_ingest_heartbeat_rtt_seconds";
pub const INGEST_RESUME_SEQ: &str = "waygate_ingest_resume_seq";
pub const WORKER_MESSAGES_TOTAL: &str = "waygate_worker_messages_total";
pub const WORKER_HANDLER_DURATION: &str = "waygate_worker_handler_duration_seconds";
pub const WORKER_END_TO_END: &str = "waygate_worker_end_to_end_seconds";
pub const WORKER_INFLIGHT: &str = "waygate_worker_inflight";
pub const QUEUE_DEPTH: &str = "waygate_amqp_queue_depth";
pub const QUEUE_CONSUMERS: &str = "waygate_amqp_queue_consumers";
pub const DLQ_DEPTH: &str = "waygate_dlq_depth";
/// Shared with the gateway: `waygate_backend_up{backend="amqp"}`.
pub const BACKEND_UP: &str = "waygate_backend_up";
