//! Who a process is over weeks (rule `slow_exfil`): what survives restarts
//! and new processes. On the host the uid and the executable; in a
//! container the workload (namespace and pod owner: the pod name without
//! the suffixes a ReplicaSet, a Job or a StatefulSet adds) and the
//! executable; a container with no pod known, its id. Never a pid or a comm.

/// The identity of a process, as a label (`uid=0 exe=/usr/bin/curl`,
/// `workload=ml/trainer exe=/usr/bin/python3.11`).
pub fn identity(uid: u32, exe: &str, container: &str, pod: &str, namespace: &str) -> String {
    let exe = if exe.is_empty() { "?" } else { exe };
    if container.is_empty() {
        return format!("uid={uid} exe={exe}");
    }
    if pod.is_empty() {
        let short = container.get(..12).unwrap_or(container);
        return format!("container={short} exe={exe}");
    }
    format!("workload={namespace}/{} exe={exe}", workload(pod))
}

/// The pod's owner name: `trainer-7d9f8b6c4d-x2x7q` → `trainer`
/// (Deployment), `loader-28401234-abcde` → `loader` (CronJob),
/// `db-0` → `db` (StatefulSet), `loader-x7k2p` → `loader` (Job, DaemonSet).
pub fn workload(pod: &str) -> &str {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    let random = |s: &str| {
        s.len() == 5
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    let hash =
        |s: &str| (6..=10).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric());
    match parts.as_slice() {
        [last, mid, rest] if random(last) && hash(mid) => rest,
        [last, rest, ..] if random(last) || last.chars().all(|c| c.is_ascii_digit()) => {
            pod.strip_suffix(&format!("-{last}")).unwrap_or(rest)
        }
        _ => pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_from_pod_names() {
        assert_eq!(workload("trainer-7d9f8b6c4d-x2x7q"), "trainer");
        assert_eq!(workload("vllm-server-5c6b7d8f9-abcde"), "vllm-server");
        assert_eq!(workload("loader-28401234-abcde"), "loader");
        assert_eq!(workload("db-0"), "db");
        assert_eq!(workload("sensor-x7k2p"), "sensor");
        assert_eq!(workload("standalone"), "standalone");
    }

    #[test]
    fn identities_never_name_a_pid() {
        assert_eq!(
            identity(0, "/usr/bin/curl", "", "", ""),
            "uid=0 exe=/usr/bin/curl"
        );
        assert_eq!(
            identity(
                1000,
                "/usr/bin/python3",
                "abcdef0123456789",
                "trainer-7d9f8b6c4d-x2x7q",
                "ml"
            ),
            "workload=ml/trainer exe=/usr/bin/python3"
        );
        assert_eq!(
            identity(0, "", "abcdef0123456789", "", ""),
            "container=abcdef012345 exe=?"
        );
    }
}
