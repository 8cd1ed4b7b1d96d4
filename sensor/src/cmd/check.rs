//! `sensor check`: can the agent run here? Kernel, BTF, privileges, struct
//! offsets, and whether each program loads and attaches (each tried on its
//! own, then detached).

use std::{io::Write as _, path::Path};

use serde::Serialize;

use crate::{
    cli::CheckArgs,
    config::VMLINUX_BTF,
    failure::Failure,
    kernel::{loader::Sensor, offsets, privilege},
    util::sysinfo,
};

#[derive(Serialize)]
struct Row {
    item: String,
    status: &'static str,
    detail: String,
}

fn row(item: impl Into<String>, ok: bool, detail: impl Into<String>) -> Row {
    Row {
        item: item.into(),
        status: if ok { "ok" } else { "FAIL" },
        detail: detail.into(),
    }
}

pub fn main(args: CheckArgs) -> Result<(), Failure> {
    let mut rows = vec![row("kernel", true, sysinfo::kernel_release())];
    let btf = Path::new(VMLINUX_BTF);
    rows.push(row("btf", btf.exists(), VMLINUX_BTF));

    let caps = sysinfo::effective_capabilities();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let bpf_ok =
        has(sysinfo::CAP_SYS_ADMIN) || (has(sysinfo::CAP_BPF) && has(sysinfo::CAP_PERFMON));
    rows.push(row(
        "privileges",
        bpf_ok,
        format!(
            "euid {}, CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={} CAP_SYS_RESOURCE={}",
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            has(sysinfo::CAP_BPF),
            has(sysinfo::CAP_PERFMON),
            has(sysinfo::CAP_SYS_ADMIN),
            has(sysinfo::CAP_SYS_RESOURCE)
        ),
    ));
    let offsets_ok = match offsets::resolve_offsets(btf) {
        Ok(_) => row("struct offsets", true, "resolved from kernel BTF"),
        Err(e) => row("struct offsets", false, e.to_string()),
    };
    let can_load = offsets_ok.status == "ok";
    rows.push(offsets_ok);

    let mut ready = bpf_ok && can_load;
    if can_load {
        match Sensor::probe_each() {
            Ok(probes) => {
                for p in probes {
                    let detail = match p.attached {
                        Some(h) if p.failures.is_empty() => format!("{} ({})", h.hook, h.program),
                        Some(h) => format!(
                            "{} ({}), in place of {}",
                            h.hook,
                            h.program,
                            p.failure_text()
                        ),
                        None => format!("no hook: {}", p.failure_text()),
                    };
                    if p.capability.required && p.attached.is_none() {
                        ready = false;
                    }
                    let mut r = row(
                        format!("capability {}", p.capability.name),
                        p.attached.is_some(),
                        detail,
                    );
                    if p.attached.is_none() && !p.capability.required {
                        // The agent runs without it, blind to this capability.
                        r.status = "WARN";
                    }
                    rows.push(r);
                }
            }
            Err(e) => {
                ready = false;
                rows.push(row("programs", false, format!("{e:#}")));
            }
        }
    }

    // A closed stdout (`| head`) is not an error here.
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "ready": ready,
            "checks": rows,
            "capabilities": privilege::DEPLOYMENT,
        });
        let _ = writeln!(out, "{doc}");
    } else {
        let width = rows.iter().map(|r| r.item.len()).max().unwrap_or(0);
        for r in &rows {
            let _ = writeln!(out, "{:<width$}  {:<4}  {}", r.item, r.status, r.detail);
        }
        let _ = writeln!(
            out,
            "{}",
            if ready {
                "ready: sensor run can start here"
            } else {
                "NOT READY: sensor run cannot start here"
            }
        );
    }
    if ready {
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "preflight failed (see the table above)"
        )))
    }
}
