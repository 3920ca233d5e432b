//! The queue between app threads and the agent's task: bounded, and quiet.
//!
//! `record()` and `count_success()` push here. A push wakes the task only when the task needs
//! it, because a wake-up (a futex call, and the task scheduled against the caller on a busy
//! machine) was most of the slow tail of `record()`:
//!
//! - the task has no seal deadline for that kind of message (it is asleep with nothing pending
//!   and would not come back by itself): a failure must reach the core at once, so that its
//!   seal delay and scope check start when it happens, as before;
//! - or the queue holds a quarter of its capacity;
//! - or the task last drained the queue [`IDLE_MS`] or more ago: a burst after a pause wakes
//!   the task at its first message, with the queue nearly free, and what the end of the last
//!   burst left does not wait for a quarter to fill (on a busy machine a woken task may wait
//!   for a core for a while: waking it only at a quarter, with the tail of the previous burst
//!   already queued, left too little room, and paced bursts lost messages that a wake per
//!   message kept);
//! - and at most once until the task next drains the queue.
//!
//! Once awake, the task drains the queue until it finds it empty before it sleeps again, so a
//! burst costs its callers one wake (at a quarter of the queue) and the task keeps up with the
//! rest while it lasts; nothing is left behind when the task goes back to sleep.
//!
//! Otherwise the message waits for the task's next deadline, which comes no later than the
//! seal of the failures already pending: a failure waiting here is sealed with them, never
//! later than its own seal delay. Success counts wait the same way for the counts' deadline
//! (`report_interval`), or for the next seal when there is none. The task drains the queue
//! before every seal and flush, so nothing recorded before a flush is left out.
//!
//! ```text
//!  app thread: push ─▶ [ items | kinds | armed | woken ]  (one short lock)
//!                  └─ wake only if: not armed for its kind, len ≥ capacity / 4, or the
//!                     last take was IDLE_MS ago; once until the next take
//!  task:       take (swap, O(1)) ─▶ core ─▶ arm(deadlines): empty? ─▶ sleep until deadline
//!                                                          └ no: take again   or wake
//! ```

use std::sync::{Mutex, MutexGuard};

/// A push into a queue that the task last drained this long ago (milliseconds of the callers'
/// clock) wakes it: the start of a burst.
pub(crate) const IDLE_MS: u64 = 2;

/// What is pushed: a failure needs the task at once while no failure seal is pending; a
/// success count only while no counts deadline is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A failed request.
    Failure,
    /// A success count.
    Success,
}

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

/// A full queue hands the message back.
#[derive(Debug)]
pub(crate) struct Full<T>(pub(crate) T);

/// A push that was queued: `wake` says the caller must wake the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) wake: bool,
}

struct State<T> {
    items: Vec<T>,
    /// Failures among `items`.
    failures: usize,
    armed: Armed,
    /// A wake was asked for since the task last drained the queue.
    woken: bool,
    /// When the task last drained the queue (Unix ms).
    taken_at: u64,
}

impl<T> State<T> {
    fn needs_task(&self, wake_at: usize) -> bool {
        let successes = self.items.len() - self.failures;
        self.items.len() >= wake_at
            || (self.failures > 0 && !self.armed.failures)
            || (successes > 0 && !self.armed.counts)
    }
}

/// The bounded queue (see the [module docs](self)).
pub(crate) struct Inbox<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    wake_at: usize,
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl<T> Inbox<T> {
    /// A queue of at most `capacity` messages (at least 1). The task is woken when a quarter of
    /// it is used.
    pub(crate) fn new(capacity: usize) -> Inbox<T> {
        let capacity = capacity.max(1);
        let wake_at = (capacity / 4).max(1);
        Inbox {
            state: Mutex::new(State {
                // Room for a wake's worth up front: pushes below it never allocate.
                items: Vec::with_capacity(wake_at.min(1024)),
                failures: 0,
                armed: Armed::default(),
                woken: false,
                taken_at: 0,
            }),
            capacity,
            wake_at,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The lock is held for a push or a swap only; neither can leave the state half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, pushed at `now_ms` (Unix ms), or hands it back when the queue is full.
    pub(crate) fn push(&self, item: T, kind: Kind, now_ms: u64) -> Result<Queued, Full<T>> {
        let mut s = self.lock();
        if s.items.len() >= self.capacity {
            return Err(Full(item));
        }
        s.items.push(item);
        if kind == Kind::Failure {
            s.failures += 1;
        }
        let burst = now_ms.saturating_sub(s.taken_at) >= IDLE_MS;
        let wake = !s.woken && (burst || s.needs_task(self.wake_at));
        s.woken |= wake;
        Ok(Queued { wake })
    }

    /// Moves everything queued to the end of `into`, at `now_ms` (Unix ms). An empty `into`
    /// is swapped in whole: its allocation is kept for the next pushes, so a steady state
    /// allocates nothing.
    pub(crate) fn take(&self, into: &mut Vec<T>, now_ms: u64) {
        let mut s = self.lock();
        s.taken_at = now_ms;
        if into.is_empty() {
            std::mem::swap(&mut s.items, into);
        } else {
            into.append(&mut s.items);
        }
        s.failures = 0;
        s.woken = false;
    }

    /// The task's deadlines after it handled what it took. Returns true when messages were
    /// queued meanwhile: the task, awake anyway, should drain again rather than sleep.
    pub(crate) fn arm(&self, armed: Armed) -> bool {
        let mut s = self.lock();
        s.armed = armed;
        !s.items.is_empty()
    }

    /// Messages queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_task_is_woken_once_by_the_first_failure() {
        let inbox = Inbox::new(16);
        assert_eq!(inbox.push(1, Kind::Failure, 0).unwrap(), Queued { wake: true });
        // Already woken, not drained yet: no second wake.
        assert_eq!(inbox.push(2, Kind::Failure, 0).unwrap(), Queued { wake: false });
        let mut got = Vec::new();
        inbox.take(&mut got, 0);
        assert_eq!(got, [1, 2]);
        // Drained, still not armed: the next failure wakes again.
        assert!(!inbox.arm(Armed::default()));
        assert!(inbox.push(3, Kind::Failure, 0).unwrap().wake);
    }

    #[test]
    fn an_armed_task_is_woken_at_a_quarter_only() {
        let inbox = Inbox::new(16);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        for i in 0..3 {
            assert!(!inbox.push(i, Kind::Failure, 0).unwrap().wake, "push {i}");
        }
        assert!(inbox.push(3, Kind::Failure, 0).unwrap().wake, "the 4th of 16 wakes");
        assert!(!inbox.push(4, Kind::Success, 0).unwrap().wake, "once");
        let mut got = Vec::new();
        inbox.take(&mut got, 0);
        assert_eq!(got.len(), 5);
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn successes_wake_only_without_a_counts_deadline() {
        let inbox = Inbox::new(64);
        assert!(!inbox.arm(Armed { failures: false, counts: true }));
        assert!(!inbox.push(1, Kind::Success, 0).unwrap().wake);
        // A failure is not covered by a counts deadline: it wakes.
        assert!(inbox.push(2, Kind::Failure, 0).unwrap().wake);
        let mut got = Vec::new();
        inbox.take(&mut got, 0);
        assert!(!inbox.arm(Armed::default()));
        assert!(inbox.push(3, Kind::Success, 0).unwrap().wake);
    }

    #[test]
    fn the_first_push_after_the_task_idled_wakes_it() {
        let inbox = Inbox::new(64);
        let mut got = Vec::new();
        inbox.take(&mut got, 1_000);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        // Drained just now: the task is busy with a burst, no wake.
        assert!(!inbox.push(1, Kind::Failure, 1_000 + IDLE_MS - 1).unwrap().wake);
        inbox.take(&mut got, 2_000);
        got.clear();
        // Drained IDLE_MS ago: a new burst starts, wake at its first message only.
        assert!(inbox.push(2, Kind::Failure, 2_000 + IDLE_MS).unwrap().wake);
        inbox.take(&mut got, 3_000);
        assert_eq!(got, [2]);
        assert!(!inbox.push(3, Kind::Failure, 3_000).unwrap().wake);
        // The tail of a burst left in the queue: the next push after a pause wakes the task.
        assert!(inbox.push(4, Kind::Failure, 3_000 + IDLE_MS).unwrap().wake, "leftovers");
        assert!(!inbox.push(5, Kind::Failure, 3_000 + IDLE_MS).unwrap().wake, "once");
    }

    #[test]
    fn a_full_queue_hands_the_message_back() {
        let inbox = Inbox::new(2);
        inbox.push(1, Kind::Success, 0).unwrap();
        inbox.push(2, Kind::Success, 0).unwrap();
        assert!(matches!(inbox.push(3, Kind::Failure, 0), Err(Full(3))));
        assert_eq!(inbox.len(), 2);
    }

    #[test]
    fn arming_reports_what_was_queued_meanwhile() {
        // A failure pushed while the task was armed (no wake), then the task's seal passed and
        // it disarms: arm says the queue is not empty, so the failure is not left behind.
        let inbox = Inbox::new(64);
        assert!(!inbox.arm(Armed { failures: true, counts: true }));
        assert!(!inbox.push(1, Kind::Failure, 0).unwrap().wake);
        assert!(inbox.arm(Armed::default()));
        let mut got = Vec::new();
        inbox.take(&mut got, 0);
        assert!(!inbox.arm(Armed::default()));
    }

    #[test]
    fn no_message_is_lost_or_reordered_across_threads() {
        let inbox = std::sync::Arc::new(Inbox::new(1 << 20));
        let pushers: Vec<_> = (0..4u64)
            .map(|t| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        inbox.push((t, i), Kind::Failure, 0).unwrap();
                    }
                })
            })
            .collect();
        let mut seen = [0u64; 4];
        let mut buf = Vec::new();
        let mut done = false;
        while !done {
            done = pushers.iter().all(|p| p.is_finished());
            inbox.take(&mut buf, 0);
            for (t, i) in buf.drain(..) {
                assert_eq!(i, seen[t as usize], "thread {t} out of order");
                seen[t as usize] += 1;
            }
        }
        inbox.take(&mut buf, 0);
        assert!(buf.is_empty());
        assert_eq!(seen, [10_000; 4]);
    }
}
