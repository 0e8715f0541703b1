//! Flows the kernel's flow table evicted before this agent reported them
//! (the table is an LRU hash: when it is full, a new flow pushes the least
//! recently used one out, silently).
//!
//! Nothing tells the agent of an eviction, so it is counted from the fate
//! of every kernel entry: an entry created (`flows_created`) is still in
//! the table, or was handed over on the ring when its 5-tuple was reused
//! (`flows_reopened`), or was removed by the agent after it was reported,
//! or was evicted. Over this agent's life:
//!
//! ```text
//! evicted = Δflows_created − Δflows_reopened − removed − Δentries
//! ```
//!
//! where Δ is the change since the agent started (a datapath taken over
//! from a pin directory brings the counts of the agent before, and entries
//! that agent left in the table, which this one reports: none of that is
//! an eviction of this agent's). The counters are read in an order that
//! can only make a figure low for an instant, never high: `flows_created`
//! before the table, `flows_reopened` after it.

use std::time::Duration;

use cas_audit_common::{Counter, Counters};

/// Least time between two log lines about evictions.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// This agent's count of evicted flows.
#[derive(Debug)]
pub struct Evictions {
    /// `flows_created − flows_reopened − entries` when the agent started.
    base: i128,
    /// Entries the agent removed from the table.
    removed: u64,
    /// Evicted so far (it never goes down).
    total: u64,
    /// The total at the last log line, and when it was written (monotonic).
    logged: u64,
    logged_at: Option<Duration>,
}

impl Evictions {
    /// Starts counting from the datapath's state: `early` read before the
    /// snapshot of the table that had `entries`, `late` after it.
    pub fn start(early: &Counters, entries: usize, late: &Counters) -> Evictions {
        Evictions {
            base: i128::from(late.get(Counter::FlowsCreated))
                - i128::from(early.get(Counter::FlowsReopened))
                - entries as i128,
            removed: 0,
            total: 0,
            logged: 0,
            logged_at: None,
        }
    }

    /// Notes `n` entries the agent removed after reporting them.
    pub fn removed(&mut self, n: usize) {
        self.removed = self.removed.saturating_add(n as u64);
    }

    /// The count now, from `early` (read before the snapshot of the table
    /// that had `entries`) and `late` (read after it).
    pub fn update(&mut self, early: &Counters, entries: usize, late: &Counters) -> u64 {
        let now = i128::from(early.get(Counter::FlowsCreated))
            - i128::from(late.get(Counter::FlowsReopened))
            - entries as i128
            - i128::from(self.removed)
            - self.base;
        let now = u64::try_from(now.max(0)).unwrap_or(u64::MAX);
        self.total = self.total.max(now);
        self.total
    }

    /// Logs new evictions: the first at once, then at most one line a
    /// minute, each with the count since the line before. `mono` is a
    /// monotonic time, `capacity` the table's size.
    pub fn log(&mut self, mono: Duration, capacity: u32) {
        if self.total == self.logged {
            return;
        }
        if self
            .logged_at
            .is_some_and(|t| mono.saturating_sub(t) < LOG_INTERVAL)
        {
            return;
        }
        log::warn!(
            "the flow table ({capacity} entries) is full: {} flows evicted before they were reported{} ({} in all); their packets stay in the range counters; raise --max-flows",
            self.total - self.logged,
            if self.logged_at.is_some() {
                " since the last notice"
            } else {
                ""
            },
            self.total
        );
        self.logged = self.total;
        self.logged_at = Some(mono);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(created: u64, reopened: u64) -> Counters {
        let mut c = Counters::default();
        c.set(Counter::FlowsCreated, created);
        c.set(Counter::FlowsReopened, reopened);
        c
    }

    #[test]
    fn a_takeover_counts_only_its_own_evictions() {
        // The agent before created 200 flows, reported and removed them;
        // 3 are still in the table and 1 was handed over.
        let c = counters(204, 1);
        let mut e = Evictions::start(&c, 3, &c);
        assert_eq!(e.update(&c, 3, &c), 0, "no traffic, no eviction");
        // The 3 are reported and removed: still none.
        e.removed(3);
        assert_eq!(e.update(&c, 0, &c), 0);
        // 10 new flows in a full table: 6 stay, 4 were pushed out.
        let c = counters(214, 1);
        assert_eq!(e.update(&c, 6, &c), 4);
        // 2 handed over (a reused 5-tuple): not evictions.
        let c = counters(216, 3);
        assert_eq!(e.update(&c, 6, &c), 4);
        assert_eq!(e.total, 4);
    }

    #[test]
    fn races_only_lower_a_figure_for_an_instant_and_it_never_goes_down() {
        let z = counters(0, 0);
        let mut e = Evictions::start(&z, 0, &z);
        // A flow created after `flows_created` was read is in the table.
        assert_eq!(e.update(&z, 1, &counters(1, 0)), 0);
        assert_eq!(e.update(&counters(5, 0), 2, &counters(5, 0)), 3);
        // A handover read late lowers the figure: the total stays.
        assert_eq!(e.update(&counters(5, 0), 2, &counters(6, 1)), 3);
        // Crafted counters cannot wrap it.
        assert_eq!(
            e.update(&counters(u64::MAX, 0), 0, &counters(u64::MAX, 0)),
            u64::MAX
        );
    }

    #[test]
    fn log_lines_are_rate_limited() {
        let z = counters(0, 0);
        let mut e = Evictions::start(&z, 0, &z);
        e.update(&counters(10, 0), 0, &counters(10, 0));
        e.log(Duration::from_secs(100), 64);
        assert_eq!(e.logged, 10);
        e.update(&counters(20, 0), 0, &counters(20, 0));
        e.log(Duration::from_secs(130), 64);
        assert_eq!(e.logged, 10, "within the minute");
        e.log(Duration::from_secs(160), 64);
        assert_eq!(e.logged, 20);
    }
}
