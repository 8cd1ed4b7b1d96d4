//! Tamper detection: noticing, from inside the agent, when someone blinds
//! the sensor from outside.
//!
//! - Its programs' links are read back from `/proc/self/fdinfo` each poll: a
//!   link detached from outside (`bpftool link detach`: the cgroup hooks;
//!   tracepoint links cannot be detached, only closed with the agent) shows
//!   `cgroup_id 0`, and a link switched to another program (`BPF_LINK_UPDATE`)
//!   shows another `prog_id`.
//! - The watch tables and `RUNTIME` are read back and compared with what the
//!   agent wrote: any difference is a write by someone else (`bpftool map
//!   update/delete`); both tables empty is `watch_set_emptied`.
//! - A span without the agent is found by the audit log on restart (`gap`),
//!   and a killed agent by the heartbeat metric's staleness.
//!
//! A root attacker who can load kernel modules or write kernel memory can
//! hide all of this: these checks raise the cost, they cannot make the
//! sensor unkillable.

use std::collections::{BTreeMap, HashSet};

use crate::{
    kernel::loader::{Sensor, WatchState},
    util::fdinfo,
};

/// One finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// `program_detached`, `program_replaced`, `map_written`,
    /// `watch_set_emptied`, `agent_gap`.
    pub what: &'static str,
    pub detail: String,
}

/// One of our links as `/proc/self/fdinfo` shows it.
#[derive(Clone, Debug, PartialEq, Default)]
struct LinkState {
    prog_id: u32,
    cgroup_id: Option<u64>,
}

pub struct TamperWatch {
    /// link id → (program, hook, state at start).
    links: BTreeMap<u32, (&'static str, &'static str, LinkState)>,
    baseline: WatchState,
    /// Findings already raised: each distinct one once.
    reported: HashSet<String>,
}

impl TamperWatch {
    /// Records how things are right after loading.
    pub fn new(sensor: &Sensor) -> anyhow::Result<Self> {
        let now = own_links();
        let mut links = BTreeMap::new();
        for (hook, prog_id) in sensor.attached() {
            if let Some((id, state)) = now.iter().find(|(_, s)| s.prog_id == *prog_id) {
                links.insert(*id, (hook.program, hook.hook, state.clone()));
            }
        }
        Ok(Self {
            links,
            baseline: sensor.watch_state()?,
            reported: HashSet::new(),
        })
    }

    /// The links being watched (for `sensor check`-style reporting and tests).
    pub fn watched_links(&self) -> usize {
        self.links.len()
    }

    /// What changed since the start that the agent did not do itself; each
    /// distinct finding is returned once.
    pub fn check(&mut self, sensor: &Sensor) -> Vec<Finding> {
        let mut found = Vec::new();
        let now = own_links();
        for (link_id, (program, hook, start)) in &self.links {
            match now.get(link_id) {
                None => found.push(Finding {
                    what: "program_detached",
                    detail: format!("{program} ({hook}): link {link_id} is gone"),
                }),
                Some(s) if s.prog_id != start.prog_id => found.push(Finding {
                    what: "program_replaced",
                    detail: format!(
                        "{program} ({hook}): link {link_id} now runs program id {} instead of {}",
                        s.prog_id, start.prog_id
                    ),
                }),
                Some(s) if start.cgroup_id.is_some_and(|c| c != 0) && s.cgroup_id == Some(0) => {
                    found.push(Finding {
                        what: "program_detached",
                        detail: format!(
                            "{program} ({hook}): link {link_id} was detached from its cgroup"
                        ),
                    })
                }
                Some(_) => {}
            }
        }
        match sensor.watch_state() {
            Ok(state) => found.extend(self.compare(&state, sensor)),
            Err(e) => tracing::warn!("cannot read the watch tables back: {e:#}"),
        }
        found.retain(|f| self.reported.insert(format!("{}:{}", f.what, f.detail)));
        found
    }

    fn compare(&self, state: &WatchState, sensor: &Sensor) -> Vec<Finding> {
        let mut out = Vec::new();
        let base = &self.baseline;
        let had = base.exts.len() + base.inodes.len();
        if had > 0 && state.exts.is_empty() && state.inodes.is_empty() {
            out.push(Finding {
                what: "watch_set_emptied",
                detail: format!(
                    "WATCH_EXTS and WATCH_INODES are empty (the agent wrote {} entries)",
                    had
                ),
            });
            return out;
        }
        for (name, changes) in [
            ("WATCH_EXTS", diff(&base.exts, &state.exts)),
            ("WATCH_INODES", diff(&base.inodes, &state.inodes)),
        ] {
            if let Some(c) = changes {
                out.push(Finding {
                    what: "map_written",
                    detail: format!("{name} written from outside the agent: {c}"),
                });
            }
        }
        if state.runtime != Some(sensor.expected_runtime()) {
            out.push(Finding {
                what: "map_written",
                detail: format!(
                    "RUNTIME written from outside the agent: {:?}, expected {:?}",
                    state.runtime,
                    sensor.expected_runtime()
                ),
            });
        }
        out
    }
}

/// `None` when equal, else how many entries were added, removed, changed.
fn diff<K: Ord + Clone, V: PartialEq>(base: &[(K, V)], now: &[(K, V)]) -> Option<String> {
    let a: BTreeMap<&K, &V> = base.iter().map(|(k, v)| (k, v)).collect();
    let b: BTreeMap<&K, &V> = now.iter().map(|(k, v)| (k, v)).collect();
    let added = b.keys().filter(|k| !a.contains_key(*k)).count();
    let removed = a.keys().filter(|k| !b.contains_key(*k)).count();
    let changed = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
        .count();
    (added + removed + changed > 0)
        .then(|| format!("{added} entries added, {removed} removed, {changed} changed"))
}

/// This process's BPF links, by link id, from `/proc/self/fdinfo`.
fn own_links() -> BTreeMap<u32, LinkState> {
    fdinfo::own("bpf_link")
        .iter()
        .filter_map(|e| {
            Some((
                fdinfo::num(e, "link_id")?,
                LinkState {
                    prog_id: fdinfo::num(e, "prog_id")?,
                    cgroup_id: fdinfo::num(e, "cgroup_id"),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_counts_what_moved() {
        assert_eq!(diff(&[(1, 1)], &[(1, 1)]), None);
        assert_eq!(
            diff(&[(1, 1), (2, 2)], &[(1, 9), (3, 3)]).as_deref(),
            Some("1 entries added, 1 removed, 1 changed")
        );
    }
}
