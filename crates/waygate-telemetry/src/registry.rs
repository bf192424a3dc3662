use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Latency buckets in seconds: sub-millisecond dispatch up to the 30 s tool-call timeout.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static METADATA: Metadata<'static> = Metadata::new("waygate", metrics::Level::INFO, Some("waygate"));

/// A Prometheus registry owned by one server or tool instance (not the global recorder),
/// so several instances in one test process keep separate counts.
pub struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let recorder =
            PrometheusBuilder::new().set_buckets(BUCKETS).expect("static buckets are valid").build_recorder();
        let handle = recorder.handle();
        Registry { recorder, handle }
    }

    fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, v.clone())).collect();
        Key::from_parts(name, labels)
    }

    /// Registers (or finds) a counter; keep the handle, increments are one atomic add.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> Counter {
        self.recorder.register_counter(&Self::key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> Gauge {
        self.recorder.register_gauge(&Self::key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, String)]) -> Histogram {
        self.recorder.register_histogram(&Self::key(name, labels), &METADATA)
    }

    pub fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.recorder.describe_counter(KeyName::from(name), None, SharedString::from(help));
    }

    pub fn describe_gauge(&self, name: &'static str, help: &'static str) {
        self.recorder.describe_gauge(KeyName::from(name), None, SharedString::from(help));
    }

    pub fn describe_histogram(&self, name: &'static str, help: &'static str) {
        self.recorder.describe_histogram(KeyName::from(name), Some(Unit::Seconds), SharedString::from(help));
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent_and_render_prometheus_text() {
        let a = Registry::new();
        let b = Registry::new();
        a.describe_counter("x_total", "things");
        a.counter("x_total", &[("outcome", "ok".into())]).increment(2);
        b.counter("x_total", &[]).increment(5);
        let text = a.render();
        assert!(text.contains("# HELP x_total things"), "{text}");
        assert!(text.contains("x_total{outcome=\"ok\"} 2"), "{text}");
        assert!(!text.contains(" 5"), "{text}");
        a.histogram("lat_seconds", &[]).record(0.002);
        assert!(a.render().contains("lat_seconds_bucket{le=\"0.0025\"} 1"));
    }
}
