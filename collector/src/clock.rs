//! The collector's wall clock, in one place.
//!
//! Everything that is a pure function of time (the detector, retention, event times) takes
//! `now` as an argument; only the shells (request handlers, background loops) read the clock,
//! through [`now_millis`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_agent::report::UnixMillis;

/// Milliseconds since the Unix epoch on the collector clock (0 if the clock is before 1970).
pub(crate) fn now_millis() -> UnixMillis {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`): what a piece of
/// synchronous work costs, whatever else the machine runs meanwhile. Only differences of two
/// readings on the same thread mean anything.
pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_counts_this_threads_work_only() {
        // Work on this thread advances its clock, and never faster than the wall clock (read
        // inside the wall interval; 1 ms for the two clocks' granularity).
        let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
        let mut x = 0u64;
        while thread_cpu() - cpu < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spent = thread_cpu() - cpu;
        assert!(wall.elapsed() + Duration::from_millis(1) >= spent, "{spent:?}");
        // Another thread's work does not count here: this one is blocked in `join` meanwhile.
        let before = thread_cpu();
        let theirs = std::thread::spawn(|| {
            let start = thread_cpu();
            let mut y = 1u64;
            while thread_cpu() - start < Duration::from_millis(50) {
                y = std::hint::black_box(y.rotate_left(7) ^ 0x9e37_79b9);
            }
            thread_cpu() - start
        })
        .join()
        .unwrap();
        assert!(theirs >= Duration::from_millis(50));
        assert!(thread_cpu() - before < Duration::from_millis(25), "{:?}", thread_cpu() - before);
    }
}
