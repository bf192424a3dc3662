//! Runs the real `waygate` binary as a child process (for signals, exit codes and restarts).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_waygate")
}

/// A `waygate` command with a clean, test-local environment.
pub fn waygate(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("WAYGATE_LOG", "info");
    cmd
}

pub struct Server {
    pub child: Child,
    pub http: String,
    pub ws: Option<String>,
    pub stdout: PathBuf,
}

impl Server {
    /// Starts `waygate serve` in `dir` on free ports and waits for its ready file.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let ready = dir.join(format!("ready-{}.json", rand_suffix()));
        let stdout = dir.join(format!("serve-{}.log", rand_suffix()));
        let mut cmd = waygate(dir);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--ws-port", "0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("waygate starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break serde_json::from_str(&text).expect("ready file is JSON");
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("waygate exited early with {status}: {}", std::fs::read_to_string(&stdout).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "no ready file within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(info["pid"], child.id());
        Server {
            child,
            http: info["http"].as_str().unwrap().to_owned(),
            ws: info["ws"].as_str().map(str::to_owned),
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Adds a user with `waygate user add` (password `password123`, `env` for e.g. a
    /// cluster DATABASE_URL) and logs in through this server; returns the session token.
    pub async fn new_user_token(&self, dir: &Path, email: &str, env: &[(&str, &str)]) -> String {
        use std::io::Write;
        let mut add = waygate(dir);
        add.args(["user", "add", email]).envs(env.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = add.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"password123\n").unwrap();
        assert!(child.wait().unwrap().success(), "waygate user add {email}");
        let body = serde_json::json!({"email": email, "password": "password123"});
        let res = reqwest::Client::new().post(self.url("/api/auth/login")).json(&body).send();
        let login: Value = res.await.unwrap().json().await.unwrap();
        login["token"].as_str().unwrap().to_owned()
    }

    /// Registers a device for the user behind `token`; returns its id and session token.
    pub async fn register_device(&self, token: &str, name: &str) -> (String, String) {
        let body = serde_json::json!({"name": name, "platform": "linux", "capabilities": ["desktop"]});
        let res = reqwest::Client::new().post(self.url("/api/gateway/devices")).bearer_auth(token).json(&body).send();
        let reg: Value = res.await.unwrap().json().await.unwrap();
        (reg["deviceId"].as_str().unwrap().to_owned(), reg["sessionToken"].as_str().unwrap().to_owned())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
