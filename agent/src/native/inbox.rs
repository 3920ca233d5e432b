//! The queue between app threads and the agent's task: large enough for bursts, bounded, and
//! quiet.
//!
//! `record()` pushes a failure here, `count_success()` adds one to a per-target tally here.
//! Both hold one short lock and wake the task only when the task needs it, because a wake-up
//! (a futex call, and the task scheduled against the caller on a busy machine) was most of
//! the slow tail of `record()`.
//!
//! **Failures** go into a queue of fixed-size chunks ([`CHUNK`] messages each), at most
//! `capacity` messages (`delivery.queue_capacity`, default 65 536: a burst of tens of
//! thousands of failures, or the task held up for most of a second by a slow disk, fits; a
//! failure pushed into a full queue is dropped and counted `queue_full`). A chunk is
//! allocated when the last one fills, never copied, and the task keeps the chunks it emptied
//! to hand back at its next drain (at most [`SPARE_CHUNKS`] each, the rest freed at once): a
//! queue that grew for a burst gives its memory back after it. A push wakes the task when
//!
//! - the task has no failure seal pending (it is asleep and would not come back by itself):
//!   a failure must reach the core at once, so that its seal delay and scope check start when
//!   it happens;
//! - or the queue holds [`WAKE_AT`] messages (or a quarter of a smaller capacity), so that a
//!   burst is taken in by pieces while it lasts instead of all at the seal;
//! - and at most once until the task next drains the queue.
//!
//! Otherwise the failure waits for the task's next deadline, which comes no later than the
//! seal of the failures already pending: it is sealed with them, never later than its own
//! seal delay.
//!
//! **Success counts** take no room in the queue: a success is one increment of its
//! `(service, host)` tally (at most [`MAX_TARGETS`] distinct targets between two drains; a
//! success for one more target is ignored, like a success count on a full queue before). A
//! count wakes the task only when it has no deadline that will bring it back (no counts or
//! failure seal pending, and counts have their own `report_interval`), once until the next
//! drain. The task hands each tally to the core with the time of its first success, so the
//! heartbeat deadline starts when it did before.
//!
//! The task drains both before every seal and flush, so nothing recorded before a flush is
//! left out.
//!
//! ```text
//!  record():        push ─▶ [ chunk | chunk | … ]  ┐ (one short lock)
//!  count_success(): count ─▶ { (service, host): n } ┘ wake only if: not armed for its kind,
//!                                                    or WAKE_AT failures queued; once per drain
//!  task: take (swap, O(1); emptied chunks handed back) ─▶ core ─▶ arm(deadlines) ─▶ sleep
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// Messages per chunk of the failure queue.
pub(crate) const CHUNK: usize = 256;
/// Failures queued that wake the task (when the capacity is at least four times this).
pub(crate) const WAKE_AT: usize = 512;
/// Emptied chunks kept for the next pushes, by the queue and by the task's [`Batch`] each;
/// more are freed.
pub(crate) const SPARE_CHUNKS: usize = 4;
/// Distinct targets tallied between two drains.
pub(crate) const MAX_TARGETS: usize = 4096;

/// Which deadlines the task has: it will come back by itself, and drain the queue, no later
/// than the seal of pending failures (`failures`) or of pending counts (`counts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Armed {
    /// A failure seal is pending: new failures may wait for it.
    pub(crate) failures: bool,
    /// The task will come back for success counts (a counts or failure deadline is pending,
    /// or counts have no deadline of their own and wait for the next seal anyway).
    pub(crate) counts: bool,
}

/// A full queue (or a full tally table) hands the message back.
#[derive(Debug)]
pub(crate) struct Full<T>(pub(crate) T);

/// A push that was queued: `wake` says the caller must wake the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) wake: bool,
}

/// Successes of one target since the last drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tally {
    /// How many.
    pub(crate) n: u64,
    /// When the first was counted (Unix ms).
    pub(crate) first_ms: u64,
}

/// What one drain took: failure chunks in push order, and tallies. The task empties both
/// (`drain`), calls [`Batch::emptied`], and passes the batch back to the next
/// [`Inbox::take`], which reuses its memory.
#[derive(Debug)]
pub(crate) struct Batch<T, K> {
    pub(crate) chunks: Vec<Vec<T>>,
    pub(crate) counts: HashMap<K, Tally>,
}

impl<T, K> Batch<T, K> {
    /// After the task emptied the chunks: frees all but [`SPARE_CHUNKS`] of them, so a burst
    /// does not keep its memory while the agent idles.
    pub(crate) fn emptied(&mut self) {
        debug_assert!(self.chunks.iter().all(Vec::is_empty));
        self.chunks.truncate(SPARE_CHUNKS);
    }
}

impl<T, K> Default for Batch<T, K> {
    fn default() -> Self {
        Batch { chunks: Vec::new(), counts: HashMap::new() }
    }
}

struct State<T, K> {
    chunks: Vec<Vec<T>>,
    /// Failures in `chunks`.
    len: usize,
    /// Empty chunks (capacity [`CHUNK`]) for the next pushes.
    spare: Vec<Vec<T>>,
    counts: HashMap<K, Tally>,
    armed: Armed,
    /// A wake was asked for since the task last drained the queue.
    woken: bool,
}

/// The queue (see the [module docs](self)).
pub(crate) struct Inbox<T, K> {
    state: Mutex<State<T, K>>,
    capacity: usize,
    wake_at: usize,
}

impl<T, K> std::fmt::Debug for Inbox<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl<T, K: Eq + Hash> Inbox<T, K> {
    /// A queue of at most `capacity` failures (at least 1).
    pub(crate) fn new(capacity: usize) -> Inbox<T, K> {
        let capacity = capacity.max(1);
        let wake_at = (capacity / 4).clamp(1, WAKE_AT);
        Inbox {
            state: Mutex::new(State {
                chunks: Vec::new(),
                len: 0,
                // One chunk up front: the first pushes do not allocate it.
                spare: vec![Vec::with_capacity(CHUNK)],
                counts: HashMap::new(),
                armed: Armed::default(),
                woken: false,
            }),
            capacity,
            wake_at,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, K>> {
        // The lock is held for a push or a swap only; neither can leave the state half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a failure, or hands it back when the queue is full.
    pub(crate) fn push(&self, item: T) -> Result<Queued, Full<T>> {
        let mut s = self.lock();
        if s.len >= self.capacity {
            return Err(Full(item));
        }
        match s.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(item),
            _ => {
                let mut chunk = s.spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
                chunk.push(item);
                s.chunks.push(chunk);
            }
        }
        s.len += 1;
        let wake = !s.woken && (s.len >= self.wake_at || !s.armed.failures);
        s.woken |= wake;
        Ok(Queued { wake })
    }

    /// Adds one success to `key`'s tally, counted at `now_ms` (Unix ms), or hands the key
    /// back when [`MAX_TARGETS`] other targets are tallied already.
    pub(crate) fn count(&self, key: K, now_ms: u64) -> Result<Queued, Full<K>> {
        let mut s = self.lock();
        let full = s.counts.len() >= MAX_TARGETS;
        match s.counts.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().n += 1,
            Entry::Vacant(e) if full => return Err(Full(e.into_key())),
            Entry::Vacant(e) => {
                e.insert(Tally { n: 1, first_ms: now_ms });
            }
        }
        let wake = !s.woken && !s.armed.counts;
        s.woken |= wake;
        Ok(Queued { wake })
    }

    /// Moves everything queued into `batch`, which must have been emptied (its chunks are
    /// handed back to the queue for reuse, up to [`SPARE_CHUNKS`]).
    pub(crate) fn take(&self, batch: &mut Batch<T, K>) {
        let mut emptied = std::mem::take(&mut batch.chunks);
        debug_assert!(emptied.iter().all(Vec::is_empty) && batch.counts.is_empty());
        {
            let mut s = self.lock();
            while s.spare.len() < SPARE_CHUNKS {
                match emptied.pop() {
                    Some(chunk) => s.spare.push(chunk),
                    None => break,
                }
            }
            std::mem::swap(&mut s.chunks, &mut batch.chunks);
            std::mem::swap(&mut s.counts, &mut batch.counts);
            s.len = 0;
            s.woken = false;
        }
        // Chunks beyond the spares are freed here, outside the lock.
        drop(emptied);
    }

    /// The task's deadlines after it handled what it took. Returns true when something was
    /// queued meanwhile that these deadlines do not cover: the task, awake anyway, should
    /// drain again rather than sleep.
    pub(crate) fn arm(&self, armed: Armed) -> bool {
        let mut s = self.lock();
        s.armed = armed;
        (s.len > 0 && !armed.failures) || (!s.counts.is_empty() && !armed.counts)
    }

    /// Failures queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Empty chunks kept now.
    #[cfg(test)]
    fn spares(&self) -> usize {
        self.lock().spare.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Test = Inbox<u64, &'static str>;

    fn taken(inbox: &Test) -> (Vec<u64>, Vec<(&'static str, Tally)>) {
        let mut batch = Batch::default();
        inbox.take(&mut batch);
        let items = batch.chunks.iter_mut().flat_map(|c| c.drain(..)).collect();
        let mut counts: Vec<_> = batch.counts.drain().collect();
        counts.sort_by_key(|(k, _)| *k);
        (items, counts)
    }

    #[test]
    fn an_idle_task_is_woken_once_by_the_first_failure() {
        let inbox = Test::new(16);
        assert_eq!(inbox.push(1).unwrap(), Queued { wake: true });
        // Already woken, not drained yet: no second wake.
        assert_eq!(inbox.push(2).unwrap(), Queued { wake: false });
        assert_eq!(taken(&inbox).0, [1, 2]);
        // Drained, still not armed: the next failure wakes again.
        assert!(!inbox.arm(Armed::default()));
        assert!(inbox.push(3).unwrap().wake);
    }

    #[test]
    fn an_armed_task_is_woken_at_a_quarter_of_a_small_queue() {
        let inbox = Test::new(16);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        for i in 0..3 {
            assert!(!inbox.push(i).unwrap().wake, "push {i}");
        }
        assert!(inbox.push(3).unwrap().wake, "the 4th of 16 wakes");
        assert!(!inbox.push(4).unwrap().wake, "once");
        assert_eq!(taken(&inbox).0.len(), 5);
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn an_armed_task_is_woken_every_wake_at_failures_of_a_burst() {
        let inbox = Test::new(1 << 16);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        let wakes: Vec<u64> =
            (0..WAKE_AT as u64 * 2).filter(|&i| inbox.push(i).unwrap().wake).collect();
        assert_eq!(wakes, [WAKE_AT as u64 - 1], "one wake, at WAKE_AT, until the task drains");
        let (items, _) = taken(&inbox);
        assert_eq!(items, (0..WAKE_AT as u64 * 2).collect::<Vec<_>>(), "in push order");
        let wakes = (0..WAKE_AT as u64).filter(|&i| inbox.push(i).unwrap().wake).count();
        assert_eq!(wakes, 1, "drained: the next WAKE_AT wake again");
    }

    #[test]
    fn successes_are_tallied_per_target_and_wake_only_without_a_counts_deadline() {
        let inbox = Test::new(64);
        assert!(!inbox.arm(Armed { failures: false, counts: true }));
        for t in 0..5 {
            assert!(!inbox.count("a", 1_000 + t).unwrap().wake);
        }
        assert!(!inbox.count("b", 2_000).unwrap().wake);
        assert_eq!(inbox.len(), 0, "counts take no room in the failure queue");
        // A failure is not covered by a counts deadline: it wakes.
        assert!(inbox.push(9).unwrap().wake);
        let (items, counts) = taken(&inbox);
        assert_eq!(items, [9]);
        assert_eq!(
            counts,
            [("a", Tally { n: 5, first_ms: 1_000 }), ("b", Tally { n: 1, first_ms: 2_000 })]
        );
        assert!(!inbox.arm(Armed::default()));
        assert!(inbox.count("a", 3_000).unwrap().wake, "no deadline: the first count wakes");
        assert!(!inbox.count("b", 3_000).unwrap().wake, "once");
    }

    #[test]
    fn tallies_are_bounded_in_targets() {
        let inbox: Inbox<u64, u64> = Inbox::new(4);
        for k in 0..MAX_TARGETS as u64 {
            inbox.count(k, 0).unwrap();
        }
        assert!(matches!(inbox.count(MAX_TARGETS as u64, 0), Err(Full(_))));
        inbox.count(0, 0).expect("a target already tallied still counts");
        let mut batch = Batch::default();
        inbox.take(&mut batch);
        assert_eq!(batch.counts.len(), MAX_TARGETS);
        assert_eq!(batch.counts[&0].n, 2);
    }

    #[test]
    fn a_full_queue_hands_the_failure_back_and_counts_still_go_in() {
        let inbox = Test::new(2);
        inbox.push(1).unwrap();
        inbox.push(2).unwrap();
        assert!(matches!(inbox.push(3), Err(Full(3))));
        assert_eq!(inbox.len(), 2);
        inbox.count("a", 0).unwrap();
    }

    #[test]
    fn arming_reports_what_was_queued_meanwhile_and_not_covered() {
        // A failure pushed while the task was armed (no wake), then the task's seal passed and
        // it disarms: arm says so, so the failure is not left behind.
        let inbox = Test::new(64);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        assert!(!inbox.push(1).unwrap().wake);
        assert!(!inbox.count("a", 0).unwrap().wake);
        assert!(!inbox.arm(Armed { failures: true, counts: true }), "both still covered");
        assert!(inbox.arm(Armed { failures: false, counts: true }), "the failure is not");
        assert!(inbox.arm(Armed { failures: true, counts: false }), "the count is not");
        taken(&inbox);
        assert!(!inbox.arm(Armed::default()));
    }

    #[test]
    fn a_burst_gives_its_chunks_back_after_it() {
        let inbox = Test::new(1 << 16);
        let n = (CHUNK * (SPARE_CHUNKS + 10)) as u64;
        for i in 0..n {
            inbox.push(i).unwrap();
        }
        let mut batch = Batch::default();
        inbox.take(&mut batch);
        assert_eq!(batch.chunks.len(), SPARE_CHUNKS + 10);
        assert!(batch.chunks.iter().all(|c| c.len() == CHUNK && c.capacity() == CHUNK));
        assert_eq!(
            batch.chunks.iter().flatten().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>()
        );
        batch.chunks.iter_mut().for_each(Vec::clear);
        batch.emptied();
        assert_eq!(batch.chunks.len(), SPARE_CHUNKS, "the rest were freed");
        inbox.take(&mut batch);
        assert_eq!(inbox.spares(), SPARE_CHUNKS, "and handed back");
        assert!(batch.chunks.is_empty());
        // The next pushes use the kept chunks.
        for i in 0..(CHUNK * SPARE_CHUNKS) as u64 {
            inbox.push(i).unwrap();
        }
        assert_eq!(inbox.spares(), 0);
    }

    #[test]
    fn no_message_is_lost_or_reordered_across_threads() {
        let inbox = std::sync::Arc::new(Inbox::<(u64, u64), u64>::new(1 << 20));
        let pushers: Vec<_> = (0..4u64)
            .map(|t| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        inbox.push((t, i)).unwrap();
                        inbox.count(t, i).unwrap();
                    }
                })
            })
            .collect();
        let mut seen = [0u64; 4];
        let mut counted = [0u64; 4];
        let mut batch = Batch::default();
        let mut done = false;
        while !done {
            done = pushers.iter().all(|p| p.is_finished());
            inbox.take(&mut batch);
            for (t, i) in batch.chunks.iter_mut().flat_map(|c| c.drain(..)) {
                assert_eq!(i, seen[t as usize], "thread {t} out of order");
                seen[t as usize] += 1;
            }
            for (t, tally) in batch.counts.drain() {
                counted[t as usize] += tally.n;
            }
        }
        inbox.take(&mut batch);
        assert!(batch.chunks.is_empty() && batch.counts.is_empty());
        assert_eq!(seen, [10_000; 4]);
        assert_eq!(counted, [10_000; 4]);
    }
}
