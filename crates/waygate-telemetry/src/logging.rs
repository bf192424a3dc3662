use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

#[derive(Debug)]
pub enum LogError {
    Filter(String),
    AlreadyInstalled,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Filter(e) => write!(f, "invalid log filter: {e}"),
            LogError::AlreadyInstalled => f.write_str("a global logger is already installed"),
        }
    }
}

impl std::error::Error for LogError {}

/// Changes the active log filter at run time (`config.reload`).
#[derive(Clone)]
pub struct LogHandle {
    inner: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogHandle {
    /// A handle that changes nothing, for embedders and tests that install no logger.
    pub fn noop() -> LogHandle {
        LogHandle { inner: None }
    }

    pub fn set_filter(&self, filter: &str) -> Result<(), LogError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        let f = EnvFilter::try_new(filter).map_err(|e| LogError::Filter(e.to_string()))?;
        inner.reload(f).map_err(|e| LogError::Filter(e.to_string()))
    }
}

/// Installs the global logger: JSON lines on stdout (or human-readable with `pretty`).
pub fn init_logging(filter: &str, json: bool, instance_id: &str) -> Result<LogHandle, LogError> {
    let f = EnvFilter::try_new(filter).map_err(|e| LogError::Filter(e.to_string()))?;
    let (filter_layer, handle) = reload::Layer::new(f);
    let registry = tracing_subscriber::registry().with(filter_layer);
    let result = if json {
        registry.with(JsonLayer { instance_id: instance_id.to_owned() }).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_target(false)).try_init()
    };
    result.map_err(|_| LogError::AlreadyInstalled)?;
    Ok(LogHandle { inner: Some(handle) })
}

/// Writes `{"ts","level","service","instance_id","msg",...fields}` one object per line.
struct JsonLayer {
    instance_id: String,
}

/// Fields recorded on a span, stored in its extensions and merged into every event inside it.
struct SpanFields(Map<String, Value>);

struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(name(field), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(name(field), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(name(field), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(name(field), Value::String(format!("{value:?}")));
    }
}

fn name(field: &Field) -> String {
    match field.name() {
        "message" => "msg".to_owned(),
        other => other.to_owned(),
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut FieldVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(crate::now_rfc3339()));
        line.insert("level".into(), Value::String(event.metadata().level().as_str().to_ascii_lowercase()));
        line.insert("service".into(), Value::String("waygate".into()));
        line.insert("instance_id".into(), Value::String(self.instance_id.clone()));
        line.insert("msg".into(), Value::String(String::new()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        event.record(&mut FieldVisitor(&mut line));
        if !line.contains_key("target") {
            line.insert("target".into(), Value::String(event.metadata().target().to_owned()));
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}
