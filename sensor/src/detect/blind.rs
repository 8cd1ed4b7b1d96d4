//! When detection may be blind: map pressure that lost per-process detail
//! the rules need (a live process's counts evicted, a process counted
//! without an identity, a mapping no longer sampled, bytes counted in the
//! identity-less overflow entry). One critical `sensor_blind` alert per
//! interval while it lasts; the counts are in `sensor_lost_events_total`.

use std::time::Duration;

use sensor_common::{Loss, OVERFLOW_TGID};

use crate::collect::Poll;

pub struct BlindWatch {
    every: Duration,
    last: Option<Duration>,
}

impl BlindWatch {
    /// At most one alert per `every` (the detection window).
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// The alert's detail when this poll lost what detection needs and no
    /// alert was raised within `every`; `now` is the agent's uptime.
    pub fn check(&mut self, poll: &Poll, now: Duration) -> Option<String> {
        let lost = |reason: Loss| poll.lost[reason.index()];
        let (watched, sent) = poll
            .procs
            .iter()
            .filter(|p| p.tgid == OVERFLOW_TGID)
            .fold((0u64, 0u64), |(w, s), p| {
                (w + p.watched_read_bytes, s + p.sent_bytes)
            });
        let evicted = lost(Loss::ProcEvicted);
        let no_identity = lost(Loss::InfoMapFull);
        let mappings = lost(Loss::MmapEvicted);
        // A derived file, or a watched file under another name, that left
        // its map is no longer weights to the kernel.
        let lineage = lost(Loss::CarrierEvicted) + lost(Loss::WatchedFileEvicted);
        if evicted + no_identity + mappings + lineage + watched + sent == 0 {
            return None;
        }
        if self
            .last
            .is_some_and(|t| now.saturating_sub(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(format!(
            "kernel maps under pressure: {evicted} live process entries evicted with uncounted bytes, \
             {no_identity} processes counted without an identity, {mappings} mappings no longer sampled, \
             {lineage} derived or renamed weights files forgotten, \
             {watched} watched bytes and {sent} sent bytes counted without a process"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ProcDelta;

    fn poll_with(lost: &[(Loss, u64)], overflow_watched: u64) -> Poll {
        let mut p = Poll::default();
        for (c, n) in lost {
            p.lost[c.index()] = *n;
        }
        if overflow_watched > 0 {
            p.procs.push(ProcDelta {
                tgid: OVERFLOW_TGID,
                read_bytes: overflow_watched,
                watched_read_bytes: overflow_watched,
                sent_bytes: 0,
                mmap_bytes: 0,
                total: Default::default(),
                exited: false,
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn quiet_without_loss_and_once_per_interval() {
        let mut w = BlindWatch::new(Duration::from_secs(60));
        // Spilling is pressure, but nothing was lost: not blind.
        assert!(w
            .check(&poll_with(&[(Loss::ProcMapFull, 9)], 0), Duration::ZERO)
            .is_none());
        let d = w
            .check(
                &poll_with(&[(Loss::ProcEvicted, 3)], 0),
                Duration::from_secs(1),
            )
            .expect("evictions make it blind");
        assert!(d.contains("3 live process entries"), "{d}");
        assert!(w
            .check(&poll_with(&[], 4096), Duration::from_secs(30))
            .is_none());
        let d = w
            .check(&poll_with(&[], 4096), Duration::from_secs(62))
            .expect("again after the interval");
        assert!(d.contains("4096 watched bytes"), "{d}");
    }
}
