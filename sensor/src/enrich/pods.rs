//! Pod name and namespace of a pod UID, from the directories the kubelet
//! keeps on every node: `/var/log/pods/<namespace>_<name>_<uid>/` (names and
//! namespaces are DNS labels: no `_`). No API access needed; mount the
//! directory read-only in the DaemonSet.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
}

/// Parses `<namespace>_<name>_<uid>`.
pub fn parse_pod_dir(name: &str) -> Option<(String, Pod)> {
    let mut parts = name.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || pod.is_empty() || uid.len() != 36 {
        return None;
    }
    Some((
        uid.to_string(),
        Pod {
            namespace: namespace.into(),
            name: pod.into(),
        },
    ))
}

pub struct PodDirectory {
    dir: PathBuf,
    by_uid: HashMap<String, Pod>,
    last_scan: Option<Instant>,
}

impl PodDirectory {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            by_uid: HashMap::new(),
            last_scan: None,
        }
    }

    /// The pod of `uid`, rescanning (at most once every 5 s) on a miss.
    pub fn lookup(&mut self, uid: &str) -> Option<Pod> {
        if uid.is_empty() {
            return None;
        }
        if !self.by_uid.contains_key(uid)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last_scan = Some(Instant::now());
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                self.by_uid = entries
                    .flatten()
                    .filter_map(|e| parse_pod_dir(&e.file_name().to_string_lossy()))
                    .collect();
            }
        }
        self.by_uid.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";

    #[test]
    fn parses_kubelet_log_dirs() {
        let (uid, pod) = parse_pod_dir(&format!("ml-serving_llama-7b-5d9f7c-x2x9q_{UID}")).unwrap();
        assert_eq!(uid, UID);
        assert_eq!(
            pod,
            Pod {
                namespace: "ml-serving".into(),
                name: "llama-7b-5d9f7c-x2x9q".into()
            }
        );
        assert_eq!(parse_pod_dir("not-a-pod"), None);
        assert_eq!(parse_pod_dir("ns_name_short"), None);
    }

    #[test]
    fn looks_up_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(format!("default_trainer-0_{UID}"))).unwrap();
        let mut pods = PodDirectory::new(dir.path().to_path_buf());
        assert_eq!(pods.lookup(UID).map(|p| p.name), Some("trainer-0".into()));
        assert_eq!(pods.lookup(""), None);
    }
}
