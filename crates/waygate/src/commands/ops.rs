//! `waygate smoke` and `waygate probe`: parse, call waygate-probe, print lines or JSON.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use waygate_probe::probe::{self, Event, Monitor, ProbeOptions, Thresholds};
use waygate_probe::smoke::{self, SmokeAuth, SmokeOptions, Step, StepStatus};

use super::Failure;
use crate::cli::{ProbeArgs, SmokeArgs};

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

pub async fn smoke(args: SmokeArgs) -> Result<(), Failure> {
    let auth = match (args.cookie, args.email, args.password) {
        (Some(cookie), _, _) if !cookie.is_empty() => SmokeAuth::Cookie(cookie),
        (_, Some(email), Some(password)) => SmokeAuth::Login { email, password },
        _ => {
            return Err(anyhow!(
                "no credentials: set GATEWAY_SMOKE_COOKIE (--cookie) or TEST_USER_EMAIL + TEST_USER_PASSWORD (--email/--password)"
            )
            .into());
        }
    };
    let opts = SmokeOptions {
        base_url: args.base_url,
        auth,
        timeout: args.timeout,
        insecure: args.insecure,
        device_name: format!("waygate smoke {}", now()),
    };
    let json = args.json;
    let report = smoke::run(&opts, |step: &Step| {
        if !json {
            print_step(step);
        }
    })
    .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("report to JSON")?);
    }
    match report.failed_step {
        None => Ok(()),
        Some(name) => {
            let step = report.steps.iter().find(|s| s.name == name);
            let mut msg = format!("smoke failed at step {name}");
            if let Some(envelope) = step.and_then(|s| s.error.as_ref()) {
                msg.push_str(&format!("; server error: {envelope}"));
            }
            Err(anyhow!(msg).into())
        }
    }
}

fn print_step(step: &Step) {
    let status = match step.status {
        StepStatus::Ok => "ok",
        StepStatus::Fail => "FAIL",
        StepStatus::Skip => "skip",
    };
    println!("{:<9}{:<5}{:>9.1} ms  {}", step.name, status, step.ms, step.detail.as_deref().unwrap_or(""));
    if let Some(envelope) = &step.error {
        println!("         server error: {envelope}");
    }
}

pub async fn probe(args: ProbeArgs) -> Result<(), Failure> {
    let opts = ProbeOptions {
        url: args.url,
        paths: args.paths,
        hold: args.hold,
        monitor: args.monitor.then_some(Monitor { interval: args.interval, duration: args.duration }),
        concurrency: args.concurrency,
        timeout: args.timeout,
        welcome_wait: args.welcome_wait,
        insecure: args.insecure,
        thresholds: Thresholds {
            min_success_percent: args.min_success,
            max_handshake_ms: args.max_handshake_ms,
            max_rtt_ms: args.max_rtt_ms,
        },
    };
    let json = args.json;
    let monitor = args.monitor;
    let line = move |text: String| {
        if json {
            eprintln!("[{}] {text}", now());
        } else {
            println!("[{}] {text}", now());
        }
    };
    let on_event: Arc<dyn Fn(&Event) + Send + Sync> = Arc::new(move |e: &Event| match e {
        Event::Attempt(a) if a.ok => line(format!(
            "round {} {} ok: handshake {:.1} ms, rtt {:.1} ms ({}){}",
            a.round,
            a.url,
            a.handshake_ms.unwrap_or_default(),
            a.rtt_ms.unwrap_or_default(),
            a.rtt_kind.unwrap_or("-"),
            a.held_seconds.map(|s| format!(", held {s:.1} s")).unwrap_or_default()
        )),
        Event::Attempt(a) => {
            line(format!("round {} {} FAILED: {}", a.round, a.url, a.error.as_deref().unwrap_or("unknown error")))
        }
        Event::Alive { round, path, elapsed, rtt } => line(format!(
            "round {round} {path} alive at {:.1} s (rtt {:.1} ms)",
            elapsed.as_secs_f64(),
            rtt.as_secs_f64() * 1000.0
        )),
        Event::RoundDone { round, ok, total } if monitor => {
            let verdict = if ok == total { "healthy" } else { "UNHEALTHY" };
            line(format!("round {round}: WebSocket {verdict}: {ok}/{total} connections ok"))
        }
        Event::RoundDone { .. } => {}
    });
    let report = probe::run(&opts, on_event).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("report to JSON")?);
    } else {
        let s = &report.summary;
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "[{}] summary: {} rounds, {}/{} ok ({}%), handshake ms p50 {} p95 {} max {}, rtt ms p50 {} p99 {}",
            now(),
            report.rounds,
            s.successes,
            s.attempts,
            s.success_percent,
            f(s.handshake_ms.p50),
            f(s.handshake_ms.p95),
            f(s.handshake_ms.max),
            f(s.rtt_ms.p50),
            f(s.rtt_ms.p99),
        );
        println!(
            "[{}] {}",
            now(),
            if report.ok { "PASS".to_owned() } else { format!("FAIL: {}", report.violations.join("; ")) }
        );
    }
    if report.ok { Ok(()) } else { Err(anyhow!("probe below thresholds: {}", report.violations.join("; ")).into()) }
}
