//! A program the host runs for a capability (an `exec:` secret source, a
//! deploy program) in a process group of its own, so that what it starts
//! can be stopped with it.

use std::sync::atomic::{AtomicBool, Ordering};

/// The process group of a program started with `process_group(0)`: killed
/// whole when dropped before the program was reaped (it did not finish in
/// time, or its call was dropped), or when [`Group::kill`] is asked. Once
/// the program is reaped and its group empty, the group's number may be
/// another's: after [`Group::reaped`] a drop kills nothing.
pub(crate) struct Group {
    id: Option<rustix::process::Pid>,
    reaped: AtomicBool,
}

impl Group {
    /// The group `child` leads.
    pub(crate) fn of(child: &tokio::process::Child) -> Group {
        Group {
            id: (child.id()).and_then(|pid| rustix::process::Pid::from_raw(pid.try_into().ok()?)),
            reaped: false.into(),
        }
    }

    /// The program was reaped: a drop no longer kills the group.
    pub(crate) fn reaped(&self) {
        self.reaped.store(true, Ordering::Relaxed);
    }

    /// Ready once the program has exited, without reaping it: until it is
    /// waited for, its zombie keeps the group's number its own. Looked at
    /// every 20 ms; never ready if the kernel cannot say.
    pub(crate) async fn exited(&self) {
        use rustix::process::{WaitId, WaitIdOptions};
        let Some(pid) = self.id else {
            return std::future::pending().await;
        };
        let how = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
        loop {
            match rustix::process::waitid(WaitId::Pid(pid), how) {
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Ok(Some(_)) => return,
                Err(_) => return std::future::pending().await,
            }
        }
    }

    /// Kills every process left in the group. Only before the program is
    /// reaped: its zombie keeps the group's number from being another's.
    pub(crate) fn kill(&self) {
        if let Some(group) = self.id {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Relaxed) {
            self.kill();
        }
    }
}
