//! The one enrichment step: each poll is labelled once — who every process
//! is (command, container, pod, namespace; executable and command line for
//! those that moved weights or sent to untrusted destinations) and the class
//! of every destination — and everything downstream (metrics, tail records,
//! the audit log, detection, alerts) reads these labels instead of looking
//! them up again.

use std::collections::HashMap;

use ipnet::IpNet;
use sensor_common::ExecInfo;

use super::{
    container::CgroupResolver,
    destination::{Classifier, DestClass},
    pods::PodDirectory,
    procmeta::{ProcMeta, ProcMetaCache},
};
use crate::collect::{endpoint::Endpoint, Identity, Poll};

/// Who a process is, as labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    pub comm: String,
    /// Container id, empty on the host.
    pub container: String,
    /// Pod name where the kubelet's directory tells it, else its UID.
    pub pod: String,
    pub namespace: String,
}

/// A send with its destination class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledSend {
    pub tgid: u32,
    pub endpoint: Endpoint,
    pub class: DestClass,
    pub bytes: u64,
}

/// A poll's labels.
#[derive(Debug, Default)]
pub struct Labelled {
    /// Every process of the poll that has an identity.
    pub procs: HashMap<u32, Labels>,
    /// Every send of the poll, classified once.
    pub sends: Vec<LabelledSend>,
    /// Processes (tgid, first seen) that moved weights or sent to untrusted
    /// destinations and are not named yet.
    pub needs_meta: Vec<(u32, u64)>,
}

impl Labelled {
    pub fn of(&self, tgid: u32) -> Option<&Labels> {
        self.procs.get(&tgid)
    }
}

pub struct Enricher {
    containers: CgroupResolver,
    classifier: Classifier,
    pods: PodDirectory,
    meta: ProcMetaCache,
}

impl Enricher {
    pub fn new(trusted: Vec<IpNet>, pods_dir: std::path::PathBuf) -> Self {
        Self {
            containers: CgroupResolver::new(),
            classifier: Classifier::new(trusted),
            pods: PodDirectory::new(pods_dir),
            meta: ProcMetaCache::new(16_384),
        }
    }

    /// Labels `poll` once, and says which processes need their executable
    /// and command line remembered now (see [`Self::remember`]).
    pub fn label(&mut self, poll: &Poll) -> Labelled {
        let mut out = Labelled::default();
        for (tgid, id) in &poll.identities {
            let labels = self.labels_of(id);
            out.procs.insert(*tgid, labels);
        }
        out.sends = poll
            .sends
            .iter()
            .map(|s| LabelledSend {
                tgid: s.tgid,
                endpoint: s.endpoint,
                class: self.classifier.classify(&s.endpoint),
                bytes: s.bytes,
            })
            .collect();
        // The processes that moved weights or sent to untrusted
        // destinations, not named yet: named now, while they are alive.
        let untrusted: std::collections::HashSet<u32> = out
            .sends
            .iter()
            .filter(|s| s.class == DestClass::Untrusted)
            .map(|s| s.tgid)
            .collect();
        out.needs_meta = poll
            .procs
            .iter()
            .filter(|p| p.watched_read_bytes > 0 || untrusted.contains(&p.tgid))
            .filter_map(|p| poll.identities.get(&p.tgid))
            .filter(|id| !self.meta.knows(id.tgid, id.first_seen_ns))
            .map(|id| (id.tgid, id.first_seen_ns))
            .collect();
        out
    }

    /// Remembers the executable and command line of `needs` (from /proc, else
    /// from the kernel's exec records in `exec`, read with the snapshot).
    pub fn remember(&mut self, needs: &[(u32, u64)], exec: &HashMap<u32, ExecInfo>) {
        for (tgid, first_seen_ns) in needs {
            self.meta
                .remember(*tgid, *first_seen_ns, || exec.get(tgid).copied());
        }
    }

    /// Labels of one process (for an alert whose process is not in this
    /// poll, its labels as of now).
    pub fn labels_of(&mut self, id: &Identity) -> Labels {
        let a = self.containers.attribution(id.cgroup_id, id.tgid);
        let (pod, namespace) = match self.pods.lookup(&a.pod_uid) {
            Some(p) => (p.name, p.namespace),
            None => (a.pod_uid, String::new()),
        };
        Labels {
            comm: id.comm.clone(),
            container: a.container,
            pod,
            namespace,
        }
    }

    /// Executable and command line, as remembered when labelled.
    pub fn meta(&self, tgid: u32, first_seen_ns: u64) -> ProcMeta {
        self.meta.get(tgid, first_seen_ns)
    }
}
