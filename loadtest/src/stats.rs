//! What the run measured: an HDR latency histogram (microseconds), one coarser histogram per
//! second for the timeline, and counts of outcomes, errors by reason and replays.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded: 10 minutes, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 600_000_000;

/// One second of the run.
#[derive(Debug)]
pub struct Second {
    /// Requests completed with SUCCESS.
    pub succeeded: u64,
    /// Requests completed otherwise.
    pub errors: u64,
    /// Latencies of the requests completed in this second (2 significant digits).
    pub latency: Histogram<u64>,
}

/// Everything measured, behind one lock held for a few hundred nanoseconds per request.
#[derive(Debug)]
pub struct Stats {
    /// Latency of every completed request but the warm-up's (3 significant digits).
    pub latency: Histogram<u64>,
    /// Requests started during the warm-up (`--warmup`): counted, but not in `latency`.
    pub warmup_requests: u64,
    /// Per second since the start.
    pub timeline: Vec<Second>,
    /// Requests completed with SUCCESS.
    pub succeeded: u64,
    /// Errors by `STATUS: reason`, `http N`, `timeout`, `connect: …`.
    pub errors: BTreeMap<String, u64>,
    /// Connections that could not be opened (also counted in `errors`).
    pub connect_failures: u64,
    /// Requests and successes per transport.
    pub by_transport: BTreeMap<&'static str, (u64, u64)>,
    /// Replays sent, and those whose answer differed from the device's first answer.
    pub replays: u64,
    /// Replays answered with other credentials than the first time.
    pub replay_mismatches: u64,
    /// Open loop: requests due before the deadline that were never sent because every worker was
    /// still waiting for earlier answers (raise --concurrency, or the server is saturated).
    pub never_sent: Option<u64>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            warmup_requests: 0,
            timeline: Vec::new(),
            succeeded: 0,
            errors: BTreeMap::new(),
            connect_failures: 0,
            by_transport: BTreeMap::new(),
            replays: 0,
            replay_mismatches: 0,
            never_sent: None,
        }
    }
}

impl Stats {
    /// Records one completed request: when it completed (since the start), how long it took,
    /// whether it started during the warm-up, and its error (None: SUCCESS).
    pub fn record(
        &mut self,
        at: Duration,
        latency: Duration,
        warmup: bool,
        transport: &'static str,
        error: Option<(String, bool)>,
    ) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        if warmup {
            self.warmup_requests += 1;
        } else {
            self.latency.saturating_record(us);
        }
        let second = at.as_secs() as usize;
        while self.timeline.len() <= second {
            self.timeline.push(Second {
                succeeded: 0,
                errors: 0,
                latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid bounds"),
            });
        }
        let slot = &mut self.timeline[second];
        slot.latency.saturating_record(us);
        let t = self.by_transport.entry(transport).or_default();
        t.0 += 1;
        match error {
            None => {
                slot.succeeded += 1;
                self.succeeded += 1;
                t.1 += 1;
            }
            Some((reason, connect)) => {
                slot.errors += 1;
                if connect {
                    self.connect_failures += 1;
                }
                *self.errors.entry(reason).or_default() += 1;
            }
        }
    }

    /// Requests completed, warm-up included.
    pub fn completed(&self) -> u64 {
        self.latency.len() + self.warmup_requests
    }

    /// Requests completed otherwise than with SUCCESS.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}
