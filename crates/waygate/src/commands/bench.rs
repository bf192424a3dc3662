//! `waygate bench …`: parse into the harness's options, run, print, plot.

use std::io::Write;

use tokio_util::sync::CancellationToken;
use waygate_bench::{DispatchOptions, Options, Report, Workload};

use super::Failure;
use super::serve::shutdown_signal;
use crate::cli::{BenchArgs, BenchCommand, BenchOutput};

pub async fn run(cmd: BenchCommand) -> Result<(), Failure> {
    let cancel = CancellationToken::new();
    let signal = shutdown_signal()?;
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        signal.await;
        on_signal.cancel();
    });
    let (report, out) = match cmd {
        BenchCommand::Echo(a) => realtime(Workload::Echo, a, cancel).await?,
        BenchCommand::Fanout(a) => realtime(Workload::Fanout, a, cancel).await?,
        BenchCommand::Connect(a) => realtime(Workload::Connect, a, cancel).await?,
        BenchCommand::Idle(a) => realtime(Workload::Idle, a, cancel).await?,
        BenchCommand::Dispatch(a) => {
            let opts = DispatchOptions {
                accept_url: a.accept,
                device_url: a.devices_on,
                token: a.token,
                email: a.email,
                password: a.password,
                devices: a.devices,
                rate: a.rate,
                duration: a.out.duration,
                warmup: a.out.warmup,
                call_timeout: a.call_timeout,
                max_in_flight: a.max_in_flight,
                server_pid: a.out.server_pid,
                progress: !a.out.quiet,
            };
            (waygate_bench::run_dispatch(opts, cancel).await?, a.out)
        }
    };
    let text = if out.json { serde_json::to_string_pretty(&report)? } else { report.summary() };
    // A closed stdout (`| head`) is not a failure of the benchmark.
    let _ = writeln!(std::io::stdout(), "{text}");
    if let Some(path) = &out.plot {
        waygate_bench::plot::write_png(&report, path)?;
    }
    Ok(())
}

async fn realtime(w: Workload, a: BenchArgs, cancel: CancellationToken) -> Result<(Report, BenchOutput), Failure> {
    let opts = Options {
        url: a.url,
        connections: a.connections,
        rate: a.rate,
        payload: a.payload,
        duration: a.out.duration,
        warmup: a.out.warmup,
        server_pid: a.out.server_pid,
        progress: !a.out.quiet,
        channel: a.channel,
        open_concurrency: a.open_concurrency,
        timeout: a.timeout,
    };
    Ok((waygate_bench::run(w, opts, cancel).await?, a.out))
}
