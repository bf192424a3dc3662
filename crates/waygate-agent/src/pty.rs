//! One terminal session: a process in a real PTY, its output pumped to the gateway under a
//! credit window, its input written from a channel, its exit status reported after its output.
//!
//! PTY reads and writes block, so each runs on its own thread; they talk to the async side
//! through small bounded channels, so a session holds at most its window plus a few chunks.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use waygate_proto::terminal::{self, FromAgent};

/// After the process exits, descendants that still hold the PTY get this long to let go
/// before the process group is hung up (so the exit report is not held back forever).
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Input chunks queued for the PTY writer thread.
const INPUT_QUEUE: usize = 64;
/// Output chunks between the PTY reader thread and the credit gate.
const OUTPUT_QUEUE: usize = 4;

pub struct SessionSpec {
    pub id: u128,
    /// Run through `/bin/sh -c`; `None`: the user's login shell.
    pub command: Option<String>,
    pub cols: u16,
    pub rows: u16,
    pub resource_name: Option<String>,
}

/// What the connection keeps to steer a running session.
pub struct Control {
    master: Arc<Mutex<Box<dyn MasterPty + Send>>>,
    pgid: i32,
    ended: CancellationToken,
}

impl Control {
    pub fn resize(&self, cols: u16, rows: u16) {
        let size = PtySize { rows, cols, pixel_width: 0, pixel_height: 0 };
        if let Err(e) = self.master.lock().expect("pty lock").resize(size) {
            tracing::debug!(error = %e, "resize failed");
        }
    }

    /// Ends the session: hangs up the whole process group, then kills what ignored that.
    pub fn kill(&self) {
        self.ended.cancel();
        kill_group(self.pgid);
    }
}

/// SIGHUP now (what a closing terminal sends), SIGKILL a moment later for what ignored it.
fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal; ESRCH (group already gone) is fine.
    unsafe { libc::killpg(pgid, libc::SIGHUP) };
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // SAFETY: as above.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        });
    }
}

/// The exit code a shell would report: the status, or 128 + signal number.
pub fn exit_code(status: &portable_pty::ExitStatus) -> i32 {
    let Some(name) = status.signal() else { return status.exit_code() as i32 };
    for n in 1..65 {
        // SAFETY: strsignal returns a pointer to a static or thread-local string (or null).
        let s = unsafe { libc::strsignal(n) };
        if !s.is_null() && unsafe { std::ffi::CStr::from_ptr(s) }.to_string_lossy() == name {
            return 128 + n;
        }
    }
    128
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn text(msg: &FromAgent) -> Message {
    Message::text(serde_json::to_string(msg).expect("wire types serialize"))
}

/// Starts the process and the tasks around it. Returns the input sender, the credit
/// semaphore the gateway tops up, and the control handle.
pub fn start(
    spec: SessionSpec,
    out: mpsc::Sender<Message>,
    done: mpsc::Sender<u128>,
) -> std::io::Result<(mpsc::Sender<Bytes>, Arc<Semaphore>, Control)> {
    let size = PtySize { rows: spec.rows.max(1), cols: spec.cols.max(1), pixel_width: 0, pixel_height: 0 };
    let pair = native_pty_system().openpty(size).map_err(io_err)?;
    let mut cmd = match &spec.command {
        Some(c) => {
            let mut b = CommandBuilder::new("/bin/sh");
            b.args(["-c", c]);
            if let Some(home) = std::env::var_os("HOME") {
                b.cwd(home);
            }
            b
        }
        None => CommandBuilder::new_default_prog(),
    };
    cmd.env("TERM", "xterm-256color");
    cmd.env("WAYGATE_SESSION_ID", terminal::session_hex(spec.id));
    if let Some(r) = &spec.resource_name {
        cmd.env("WAYGATE_RESOURCE_NAME", r);
    }
    // portable-pty starts the child with setsid: it leads its own process group.
    let mut child = pair.slave.spawn_command(cmd).map_err(io_err)?;
    drop(pair.slave);
    let pid = child.process_id().unwrap_or(0);
    let mut reader = pair.master.try_clone_reader().map_err(io_err)?;
    let mut writer = pair.master.take_writer().map_err(io_err)?;
    let credit = Arc::new(Semaphore::new(terminal::SESSION_WINDOW as usize));
    let (input_tx, mut input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
    let ended = CancellationToken::new();
    let session = terminal::session_hex(spec.id);
    tracing::info!(session_id = %session, pid, resource_name = spec.resource_name.as_deref(), "session started");

    std::thread::Builder::new().name("pty-read".into()).spawn(move || {
        let mut buf = vec![0u8; terminal::MAX_CHUNK];
        loop {
            match reader.read(&mut buf) {
                // EIO once every holder of the slave side is gone: the session's output ended.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunk_tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    })?;
    std::thread::Builder::new().name("pty-write".into()).spawn(move || {
        while let Some(b) = input_rx.blocking_recv() {
            if writer.write_all(&b).and_then(|()| writer.flush()).is_err() {
                break;
            }
        }
    })?;
    let waiter = tokio::task::spawn_blocking(move || child.wait());

    let control = Control { master: Arc::new(Mutex::new(pair.master)), pgid: pid as i32, ended: ended.clone() };
    let gate = credit.clone();
    tokio::spawn(async move {
        let _ = out.send(text(&FromAgent::Opened { session: session.clone(), pid })).await;
        let id = spec.id;
        let pump_out = out.clone();
        let pump = async move {
            while let Some(chunk) = chunk_rx.recv().await {
                // Credit is what the gateway has passed on to the browser: no credit, no read.
                match gate.acquire_many(chunk.len() as u32).await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                let frame = Bytes::from(terminal::data_payload(id, &chunk));
                if pump_out.send(Message::Binary(frame)).await.is_err() {
                    return;
                }
            }
        };
        tokio::pin!(pump, waiter);
        let grace = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(grace);
        let (mut pump_done, mut code) = (false, None::<i32>);
        let finished = loop {
            tokio::select! {
                _ = ended.cancelled() => break false,
                () = &mut pump, if !pump_done => {
                    pump_done = true;
                    if code.is_some() { break true }
                }
                status = &mut waiter, if code.is_none() => {
                    code = Some(match status {
                        Ok(Ok(s)) => exit_code(&s),
                        _ => 1,
                    });
                    if pump_done { break true }
                    grace.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                }
                () = &mut grace, if code.is_some() && !pump_done => {
                    kill_group(pid as i32);
                    grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
                }
            }
        };
        if finished {
            let code = code.unwrap_or(1);
            tracing::info!(session_id = %session, code, "session exited");
            let _ = out.send(text(&FromAgent::Exit { session: session.clone(), code })).await;
        } else {
            tracing::info!(session_id = %session, "session closed by the gateway");
        }
        // Whatever the session left behind goes with it.
        kill_group(pid as i32);
        let _ = done.send(id).await;
    });
    Ok((input_tx, credit, control))
}
