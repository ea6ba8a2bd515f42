//! Which process a FUSE request came from.
//!
//! FUSE tells the daemon the id of the calling task (a thread id). A
//! close (`FLUSH`) from a task of another process than the one that wrote
//! is a fork's child closing its inherited descriptor, not the writer's
//! close; this module tells the two apart through `/proc/TID/status`.

/// The process (thread group) of task `tid`, if it still runs.
fn process_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

/// True when tasks `a` and `b` belong to one process, or when that cannot
/// be told any more (a task has exited): then a close commits, as before.
pub fn same_process(a: u32, b: u32) -> bool {
    match (process_of(a), process_of(b)) {
        (Some(pa), Some(pb)) => pa == pb,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's task id, from `/proc/thread-self` (`PID/task/TID`).
    fn gettid() -> u32 {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        link.file_name().unwrap().to_str().unwrap().parse().unwrap()
    }

    #[test]
    fn threads_share_a_process_and_children_do_not() {
        let me = std::process::id();
        // A task that cannot exist (above any pid_max): its process cannot
        // be told, so a close by it (or of its writes) commits.
        let gone = u32::MAX - 1;
        assert_eq!(process_of(gone), None);
        assert!(same_process(me, gone));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let live = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(process_of(tid), Some(me));
        assert!(same_process(me, tid));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!same_process(me, child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        done_tx.send(()).unwrap();
        live.join().unwrap();
    }
}
