//! Waiting on the host's own locks and long work without holding up a
//! tokio worker: the other invocations on its queue go on meanwhile.

use std::sync::{Mutex, MutexGuard, TryLockError};

/// Runs `wait` (a wait, or long work, on this thread) so that a
/// multi-threaded tokio runtime's other tasks go on meanwhile: the
/// worker's queue is handed to another thread while `wait` runs. On a
/// current-thread runtime, or outside one, it just runs.
pub(crate) fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// `mutex` locked; if another holds it, waited for as [`blocking`] waits
/// (a task's history is held through a long policy evaluation). A
/// poisoned lock is taken as it is.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.try_lock() {
        Ok(held) => held,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            blocking(|| mutex.lock().unwrap_or_else(|p| p.into_inner()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// A task waiting for a lock another thread holds leaves its worker to
    /// the runtime's other tasks: on a runtime of one worker, a ticker
    /// keeps ticking while the lock is held (a plain `lock` stops it).
    #[test]
    fn a_task_waiting_for_a_held_lock_leaves_its_worker_to_others() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let held = Arc::new(Mutex::new(0u32));
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = {
            let held = held.clone();
            std::thread::spawn(move || {
                let mut g = held.lock().unwrap();
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(400));
                *g += 1;
            })
        };
        rx.recv().unwrap();
        let ticks = rt.block_on(async {
            let ticker = tokio::spawn(async {
                let (mut ticks, start) = (0, Instant::now());
                while start.elapsed() < Duration::from_millis(300) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks += 1;
                }
                ticks
            });
            let waiter = tokio::spawn({
                let held = held.clone();
                async move { *super::lock(&held) }
            });
            assert_eq!(
                waiter.await.unwrap(),
                1,
                "the lock was taken after its holder"
            );
            ticker.await.unwrap()
        });
        holder.join().unwrap();
        assert!(
            ticks >= 10,
            "the ticker stalled while the lock was waited for: {ticks} ticks"
        );
    }
}
