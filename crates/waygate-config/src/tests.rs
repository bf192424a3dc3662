use super::*;
use std::io::Write;

fn layers(flags: &[(&str, &str)], env: &[(&str, &str)], file: Option<&str>) -> (Layers, Option<tempfile_lite::File>) {
    let to_map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let tmp = file.map(tempfile_lite::File::with_contents);
    let l = Layers { flags: to_map(flags), env: to_map(env), file: tmp.as_ref().map(|t| t.path.clone()) };
    (l, tmp)
}

/// A tiny temp file helper so the config crate needs no extra dev-dependency.
mod tempfile_lite {
    use super::*;
    pub struct File {
        pub path: PathBuf,
    }
    impl File {
        pub fn with_contents(text: &str) -> File {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("waygate-config-test-{}-{n}.toml", std::process::id()));
            std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
            File { path }
        }
        pub fn rewrite(&self, text: &str) {
            std::fs::write(&self.path, text).unwrap();
        }
    }
    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[test]
fn defaults_are_valid_and_match_the_spec() {
    let c = Config::from_pairs([]).unwrap();
    assert_eq!(c.websocket_port, 8080);
    assert_eq!(c.gateway_ws_port, Some(3001));
    assert_eq!(c.gateway_ws_health_path, "/health");
    assert_eq!(c.gateway_ws_path, "/api/gateway/ws");
    assert_eq!(c.dispatch_poll, Duration::from_millis(500));
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.database_url.expose(), "sqlite://waygate.db");
    assert_eq!(c.reloadable.max_connections, 100_000);
    assert_eq!(c.reloadable.max_connections_per_ip, 1000);
    assert_eq!(c.reloadable.max_message_bytes, 65536);
    assert_eq!(c.reloadable.messages_per_second, 100);
    assert_eq!(c.reloadable.send_queue, 1024);
    assert_eq!(c.heartbeat, Duration::from_secs(25));
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(!c.cluster);
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let file = "websocket_port = 1111\ngateway_ws_port = 2222\nwaygate_region = \"file\"\n";
    let (l, _f) =
        layers(&[("WEBSOCKET_PORT", "3333")], &[("WEBSOCKET_PORT", "4444"), ("GATEWAY_WS_PORT", "5555")], Some(file));
    let c = Config::load(l).unwrap();
    assert_eq!(c.websocket_port, 3333, "flag wins");
    assert_eq!(c.gateway_ws_port, Some(5555), "env beats file");
    assert_eq!(c.region, "file", "file beats default");
    assert_eq!(c.gateway_ws_health_path, "/health", "default");
}

#[test]
fn poll_below_minimum_names_the_variable() {
    let err = Config::from_pairs([("GATEWAY_DISPATCH_POLL_MS", "50")]).unwrap_err();
    assert_eq!(err.problems().len(), 1);
    assert_eq!(err.problems()[0].key, "GATEWAY_DISPATCH_POLL_MS");
    assert!(err.to_string().contains("GATEWAY_DISPATCH_POLL_MS"));
    assert!(Config::from_pairs([("GATEWAY_DISPATCH_POLL_MS", "100")]).is_ok());
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = Config::from_pairs([
        ("GATEWAY_DISPATCH_POLL_MS", "50"),
        ("WEBSOCKET_PORT", "http"),
        ("WAYGATE_LOG_FORMAT", "xml"),
        ("DATABASE_URL", "mysql://x"),
        ("WAYGATE_TRUSTED_PROXIES", "10.0.0.0/8, not-a-cidr"),
    ])
    .unwrap_err();
    let keys: Vec<_> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["WEBSOCKET_PORT", "GATEWAY_DISPATCH_POLL_MS", "DATABASE_URL", "WAYGATE_TRUSTED_PROXIES", "WAYGATE_LOG_FORMAT"]
    );
}

#[test]
fn secrets_never_print() {
    let c = Config::from_pairs([
        ("AGENT_CONTROL_PLANE_TOKEN", "hunter2-control"),
        ("WAYGATE_JWT_SECRET", "hunter2-jwt"),
        ("DATABASE_URL", "postgres://app:hunter2-db@db:5432/waygate"),
        ("REDIS_URL", "redis://:hunter2-redis@cache:6379"),
    ])
    .unwrap();
    let rendered = c.render_toml();
    let debug = format!("{c:?}");
    for text in [&rendered, &debug] {
        assert!(!text.contains("hunter2"), "secret leaked in:\n{text}");
    }
    assert!(rendered.contains("agent_control_plane_token = \"<redacted>\""), "{rendered}");
    assert!(rendered.contains("database_url = \"postgres://app:<redacted>@db:5432/waygate\""), "{rendered}");
    // The rendered output is itself a valid config file.
    let table: toml::Table = toml::from_str(&rendered).unwrap();
    assert_eq!(table["websocket_port"].as_integer(), Some(8080));
}

#[test]
fn redact_url_keeps_everything_but_the_password() {
    assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:<redacted>@127.0.0.1:5672/%2f");
    assert_eq!(redact_url("sqlite://waygate.db"), "sqlite://waygate.db");
    assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact_url("redis://user@host"), "redis://user@host");
}

#[test]
fn secret_matching() {
    let s = Secret::new("abc".into());
    assert!(s.matches("abc"));
    assert!(!s.matches("abd"));
    assert!(!s.matches("ab"));
    assert!(!s.matches("abcd"));
}

#[test]
fn ws_port_can_be_turned_off() {
    assert_eq!(Config::from_pairs([("GATEWAY_WS_PORT", "off")]).unwrap().gateway_ws_port, None);
}

#[test]
fn cluster_requires_postgres_and_redis() {
    let err = Config::from_pairs([("WAYGATE_CLUSTER", "true")]).unwrap_err();
    let keys: Vec<_> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["DATABASE_URL", "REDIS_URL"]);
    Config::from_pairs([
        ("WAYGATE_CLUSTER", "true"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1/waygate"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
    ])
    .unwrap();
}

#[test]
fn routes_are_checked() {
    let file = r#"
[[routes]]
action = "ping"
target = "http://127.0.0.1:1/hook"

[[routes]]
action = "pm"
target = "amqp://agents.pm"

[[routes]]
action = "$connect"
target = "ftp://nope"
"#;
    let (l, _f) = layers(&[], &[], Some(file));
    let err = Config::load(l).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("routes[0]: action \"ping\" is built in"), "{text}");
    assert!(text.contains("routes[1]: target amqp://agents.pm needs AMQP_URL"), "{text}");
    assert!(text.contains("routes[2]: target \"ftp://nope\""), "{text}");
}

#[test]
fn unknown_file_keys_are_problems() {
    let (l, _f) = layers(&[], &[], Some("websocket_prot = 1\n"));
    let err = Config::load(l).unwrap_err();
    assert_eq!(err.problems()[0].key, "websocket_prot");
}

#[test]
fn reload_reports_changed_reloadable_keys() {
    let (l, f) = layers(&[], &[("WAYGATE_SEND_QUEUE", "10")], Some("waygate_max_connections = 5\n"));
    let c = Config::load(l).unwrap();
    let same = c.reload().unwrap();
    assert!(same.changed.is_empty() && same.needs_restart.is_empty());

    let f = f.unwrap();
    f.rewrite("waygate_max_connections = 6\nwaygate_send_queue = 99\nwebsocket_port = 9\n[[routes]]\naction = \"x\"\ntarget = \"http://127.0.0.1:9/\"\n");
    let r = c.reload().unwrap();
    assert_eq!(r.changed, ["WAYGATE_MAX_CONNECTIONS", "routes"], "env still wins for the send queue");
    assert_eq!(r.needs_restart, ["WEBSOCKET_PORT"]);
    assert_eq!(r.config.reloadable.max_connections, 6);
    assert_eq!(r.config.reloadable.send_queue, 10);
}

#[test]
fn seed_resource_name_template_is_expressible() {
    let t = "core42:aicloud:{region}:{tenant_id}:{project_id}:gpuaas/allocation:{allocation_id}";
    let c = Config::from_pairs([("WAYGATE_RESOURCE_NAME_TEMPLATE", t)]).unwrap();
    assert_eq!(c.resource_name_template, t);
}

#[test]
fn configuration_docs_are_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == docs_markdown(),
        "docs/configuration.md is stale: run `cargo run -- config docs > docs/configuration.md`"
    );
}
