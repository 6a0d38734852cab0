//! How much one read of the OS clock costs, and how late a 1 ms sleep wakes: both short and
//! bounded, so the whole program stays well under two seconds.

use std::time::{Duration, Instant};

use crate::json::Json;

const CALLS_PER_BATCH: u32 = 1000;
const CALL_BUDGET: Duration = Duration::from_millis(150);
const SLEEP_BUDGET: Duration = Duration::from_millis(500);
const MAX_SLEEPS: usize = 25;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut samples: Vec<f64>, unit: &str) -> Json {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let keys: [(&'static str, f64); 4] = if unit == "ns" {
        [("median_ns", 0.5), ("min_ns", 0.0), ("p90_ns", 0.9), ("max_ns", 1.0)]
    } else {
        [("median_us", 0.5), ("min_us", 0.0), ("p90_us", 0.9), ("max_us", 1.0)]
    };
    let mut out = Json::object().with("samples", samples.len());
    for (key, p) in keys {
        out = out.with(key, (percentile(&samples, p) * 10.0).round() / 10.0);
    }
    out
}

/// The cost of one `read()` in nanoseconds: batches of calls, each batch timed as a whole.
pub fn call_cost(mut read: impl FnMut() -> i64) -> Json {
    let start = Instant::now();
    let mut per_call = Vec::new();
    let mut sink = 0i64;
    while start.elapsed() < CALL_BUDGET && per_call.len() < 200 {
        let batch = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            sink = sink.wrapping_add(read());
        }
        per_call.push(batch.elapsed().as_nanos() as f64 / f64::from(CALLS_PER_BATCH));
    }
    // Keeps the reads from being optimized away.
    // SAFETY: a read of a local through a valid reference.
    let _ = unsafe { std::ptr::read_volatile(&sink) };
    summary(per_call, "ns")
}

/// How long a sleep of 1 ms really takes, in microseconds.
pub fn sleep_one_ms(mut sleep: impl FnMut()) -> Json {
    let start = Instant::now();
    let mut taken = Vec::new();
    while start.elapsed() < SLEEP_BUDGET && taken.len() < MAX_SLEEPS {
        let one = Instant::now();
        sleep();
        taken.push(one.elapsed().as_nanos() as f64 / 1000.0);
    }
    summary(taken, "us")
}
