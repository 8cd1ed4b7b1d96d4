//! A fake container: a cgroup named the way containerd's systemd driver
//! names one, to run workloads "in" a container without a runtime.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::Value;

use crate::workload;

/// The reader and the sender share nothing but it.
pub struct FakeContainer {
    slice: PathBuf,
    scope: PathBuf,
    pub id: String,
}

impl Default for FakeContainer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeContainer {
    pub fn new() -> FakeContainer {
        let root = crate::cgroup2_root();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id: String = format!(
            "{:016x}",
            (std::process::id() as u64 * 0x9e37_79b9) ^ (n << 40)
        )
        .repeat(4);
        let slice = root.join(format!("sensor-test-{}-{n}.slice", std::process::id()));
        let scope = slice.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&scope).expect("creating the fake container's cgroup");
        FakeContainer { slice, scope, id }
    }

    /// `sh -c 'echo $$ > cgroup.procs; exec setsid -w PROG ARGS'`, not started.
    pub fn command(&self, comm: &str, args: &[&str]) -> Command {
        let prog = workload::program(comm);
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec setsid -w {} {}",
            self.scope.display(),
            prog.display(),
            args.join(" ")
        );
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    }

    /// Runs [`FakeContainer::command`] to completion; its report.
    pub fn run(&self, comm: &str, args: &[&str]) -> Value {
        let out = self.command(comm, args).output().unwrap();
        assert!(
            out.status.success(),
            "{comm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.scope);
        let _ = std::fs::remove_dir(&self.slice);
    }
}
