//! The uploader's own thread for its blocking work (reading the spool,
//! creating a local archive's files, `syncfs`, journal appends), at a lower
//! CPU priority than the request path.
//!
//! Uploading is background work: a cosignature is revealed once its checkpoint
//! is in the spool, and the upload can come later. At 2,000 cosignatures a
//! second the witness's blocking threads used about a third of a core, most
//! of it a local archive's files (an inode and directory entries per
//! checkpoint, and new folders for new logs); on tokio's shared blocking pool
//! that work competed with the spool's group commits and the requests on
//! equal terms. On a thread of its own with a higher nice value, the scheduler gives
//! the request path the CPU first, and the uploader catches up in the gaps.
//! The spool holds whatever is not uploaded yet, so falling behind for a
//! while loses nothing.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::{Error, Result};

/// How much lower than the witness's own priority the uploader runs (added
/// to the nice value, capped at 19). At +10 a busy thread gets about a tenth
/// of the CPU a nice-0 thread competing with it gets.
pub(crate) const UPLOADER_NICE_INCREMENT: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// One named thread running jobs in order, at a lower priority. It stops
/// once the handle is dropped and the jobs queued before are done.
pub(crate) struct BackgroundThread {
    jobs: mpsc::Sender<Job>,
}

impl BackgroundThread {
    /// Starts the thread. A failure to lower its priority (a sandbox refusing
    /// `setpriority`) is logged and the thread runs at the normal priority.
    pub fn start(name: &str, nice_increment: i32) -> Result<BackgroundThread> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lower_priority(nice_increment);
                for job in queue {
                    job();
                }
            })
            .map_err(|e| Error::Archive {
                detail: format!("starting the uploader thread: {e}"),
            })?;
        Ok(BackgroundThread { jobs })
    }

    /// Runs `job` on the thread and waits for its answer.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let stopped = || Error::Archive {
            detail: "the uploader thread has stopped".to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(job());
            }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

/// Raises the calling thread's nice value by `increment` (Linux applies
/// `setpriority(PRIO_PROCESS, 0)` to the calling thread only).
fn lower_priority(increment: i32) {
    let lowered = rustix::process::getpriority_process(None)
        .and_then(|now| rustix::process::setpriority_process(None, (now + increment).min(19)));
    if let Err(error) = lowered {
        tracing::warn!(%error, "cannot lower the archive uploader's priority; it runs at the witness's");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_at_a_lower_priority() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let thread = BackgroundThread::start("test-uploader", UPLOADER_NICE_INCREMENT).unwrap();
        let first = thread
            .run(|| {
                (
                    std::thread::current().name().map(str::to_owned),
                    rustix::process::getpriority_process(None).unwrap(),
                )
            })
            .await
            .unwrap();
        assert_eq!(first.0.as_deref(), Some("test-uploader"));
        assert_eq!(first.1, (before + UPLOADER_NICE_INCREMENT).min(19));
        // The caller's own priority is untouched.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), before);
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runs = (0..3).map(|i| {
            let order = order.clone();
            thread.run(move || order.lock().unwrap().push(i))
        });
        for ran in futures::future::join_all(runs).await {
            ran.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
