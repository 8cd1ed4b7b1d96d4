//! A running `sensor run`, stopped (SIGTERM) or killed on drop.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::scrape::{scrape, Metrics};

pub struct Agent {
    child: Child,
    /// The agent's `sensor tail` socket.
    pub tail_socket: std::path::PathBuf,
    _socket_dir: tempfile::TempDir,
    pub metrics_url: String,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Alert lines from stdout, with their arrival time (unix ms).
    alerts: Arc<Mutex<Vec<(u64, serde_json::Value)>>>,
}

/// Wall-clock milliseconds since the epoch (alert arrival times use it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    /// Starts the agent on a free loopback port and waits until it says
    /// `ready` (programs attached, metrics served). Panics with its stderr
    /// if it exits or does not get ready in time.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with_env(args, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::start_wrapped(&[], args, env)
    }

    /// [`Agent::start_with_env`] with the agent run under `wrapper` (a
    /// command and its arguments, e.g. `setpriv` with a capability set), as
    /// `wrapper... sensor run ARGS`.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(crate::sensor_bin());
                c
            }
            None => Command::new(crate::sensor_bin()),
        };
        cmd.envs(env.iter().copied());
        cmd.arg("run").args(["--metrics-addr", "127.0.0.1:0"]);
        if !args.contains(&"--poll-interval-ms") {
            cmd.args(["--poll-interval-ms", "200"]);
        }
        // Each agent its own tail socket, so tests can run side by side.
        let socket_dir = tempfile::Builder::new()
            .prefix("sensor-sock")
            .tempdir()
            .expect("tempdir");
        let given = args
            .iter()
            .position(|a| *a == "--tail-socket")
            .and_then(|i| args.get(i + 1));
        let tail_socket = match given {
            Some(p) => std::path::PathBuf::from(p),
            None => {
                let p = socket_dir.path().join("sensor.sock");
                cmd.arg("--tail-socket").arg(&p);
                p
            }
        };
        // Each agent its own ledger (`/var/lib/sensor` is the host's).
        if !args.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(socket_dir.path().join("state"));
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sensor");
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let sink = alerts.clone();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let value: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("alert line is not JSON ({e}): {line}"));
                sink.lock().unwrap().push((now_ms(), value));
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .split("metrics=")
                    .nth(1)
                    .filter(|_| line.contains("ready"))
                {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(100)) {
                return Agent {
                    child,
                    tail_socket,
                    _socket_dir: socket_dir,
                    metrics_url: url,
                    stderr,
                    alerts,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "sensor run exited with {status} before ready:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sensor run not ready within 60 s:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn metrics(&self) -> Metrics {
        scrape(&self.metrics_url)
            .unwrap_or_else(|e| panic!("scraping {}: {e}\n{}", self.metrics_url, self.stderr()))
    }

    /// Polls `/metrics` until `done` holds (the agent polls the kernel maps
    /// every 200 ms here); panics with the last scrape after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if done(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{}", m.text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Alerts so far, with their arrival time (unix ms).
    pub fn alerts(&self) -> Vec<(u64, serde_json::Value)> {
        self.alerts.lock().unwrap().clone()
    }

    /// Waits for an alert matching `pred`; panics with the alerts seen after `timeout`.
    pub fn wait_for_alert(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> (u64, serde_json::Value) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.alerts().into_iter().find(|(_, a)| pred(a)) {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "no alert for {what} within {timeout:?}; alerts: {:?}\n{}",
                    self.alerts(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then wait for exit (a crash: nothing flushed).
    pub fn kill(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for sensor")
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sensor did not exit within 30 s of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
