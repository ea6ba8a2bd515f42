//! Keeps one stream's work in submission order where order matters, while
//! the work before that point runs in parallel.
//!
//! The chunk workers hash, dedup-check and compress a file's batches in
//! parallel, but the batches' pack records must be appended in file order:
//! then a file is one stretch of its pack and a cold read of it is a few
//! long reads, with no byte read twice. Each batch takes a ticket when it
//! is submitted; a finished batch is handed in with its ticket, and whoever
//! hands in the batch that is next in line runs it and every later one
//! already waiting, one at a time. A batch more than [`MAX_AHEAD`] tickets
//! ahead of the line waits to be handed in, so a stalled batch cannot make
//! the ones after it pile up in memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

/// How far ahead of the line an item may be handed in without waiting.
pub const MAX_AHEAD: u64 = 8;

/// The order of one stream's batches.
pub struct StreamOrder<T> {
    issued: AtomicU64,
    line: Mutex<Line<T>>,
    advanced: Condvar,
}

struct Line<T> {
    /// The ticket whose item runs next.
    next: u64,
    /// Items handed in ahead of their turn.
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for StreamOrder<T> {
    fn default() -> Self {
        StreamOrder {
            issued: AtomicU64::new(0),
            line: Mutex::new(Line {
                next: 0,
                waiting: BTreeMap::new(),
            }),
            advanced: Condvar::new(),
        }
    }
}

impl<T> StreamOrder<T> {
    /// The next ticket. Every ticket must be handed in exactly once (with
    /// [`StreamOrder::hand_in`]), or the items after it never run.
    pub fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::SeqCst)
    }

    /// Hands in the item of `ticket`, first waiting while it is
    /// [`MAX_AHEAD`] or more tickets ahead of the line; runs, in ticket
    /// order, every item whose turn has come. `run` is called with the
    /// line held, so runs of one stream never overlap.
    pub fn hand_in(&self, ticket: u64, item: T, mut run: impl FnMut(T)) {
        let mut line = self.line.lock();
        // The line's next ticket is being prepared by another thread (the
        // tickets were handed out in order), so it comes.
        while ticket >= line.next + MAX_AHEAD {
            self.advanced.wait(&mut line);
        }
        line.waiting.insert(ticket, item);
        let before = line.next;
        loop {
            let next = line.next;
            let Some(item) = line.waiting.remove(&next) else {
                break;
            };
            line.next += 1;
            run(item);
        }
        if line.next != before {
            self.advanced.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn items_run_in_ticket_order_whatever_order_they_arrive_in() {
        let order = StreamOrder::default();
        let tickets: Vec<u64> = (0..5).map(|_| order.ticket()).collect();
        let mut ran = Vec::new();
        for &t in &[3, 1, 4, 0, 2] {
            order.hand_in(tickets[t], t, |item| ran.push(item));
            if t == 0 {
                // 0 and the waiting 1 run; 3 and 4 wait for 2.
                assert_eq!(ran, vec![0, 1]);
            }
        }
        assert_eq!(ran, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn an_item_far_ahead_waits_until_the_line_comes_near() {
        let order = Arc::new(StreamOrder::default());
        let tickets: Vec<u64> = (0..=MAX_AHEAD).map(|_| order.ticket()).collect();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let far = {
            let (order, ran) = (order.clone(), ran.clone());
            let ticket = tickets[MAX_AHEAD as usize];
            std::thread::spawn(move || order.hand_in(ticket, ticket, |t| ran.lock().push(t)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !far.is_finished(),
            "handed in {MAX_AHEAD} ahead without waiting"
        );
        assert!(order.line.lock().waiting.is_empty());
        for &t in &tickets[..MAX_AHEAD as usize] {
            order.hand_in(t, t, |t| ran.lock().push(t));
        }
        far.join().unwrap();
        assert_eq!(*ran.lock(), tickets);
    }

    #[test]
    fn threads_handing_in_at_once_keep_the_order() {
        let order = Arc::new(StreamOrder::default());
        let ran = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<u64> = (0..400).map(|_| order.ticket()).collect();
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let (order, ran) = (order.clone(), ran.clone());
                let mine: Vec<u64> = tickets.iter().copied().filter(|t| t % 4 == k).collect();
                std::thread::spawn(move || {
                    for t in mine {
                        order.hand_in(t, t, |item| ran.lock().push(item));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*ran.lock(), tickets);
    }
}
