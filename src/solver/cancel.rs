//! Cancellation shared by the solver and the work it runs.
//!
//! A [`Cancel`] is cheap to clone; every clone sees the same state. Work that blocks (a RUN step
//! waiting for its sandbox, a copy of many files) either polls [`Cancel::is_cancelled`] between
//! units of work or registers a callback with [`Cancel::on_cancel`] that interrupts it (kills the
//! sandbox). Async code awaits [`Cancel::cancelled`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

type Callback = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Shared {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    callbacks: Mutex<BTreeMap<u64, Callback>>,
    notify: Notify,
}

/// A cancellation token: fired once, observed by every clone.
#[derive(Clone, Default)]
pub struct Cancel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// A token that has not fired.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Fires the token: runs every registered callback once (on this thread) and wakes every
    /// waiter. Later calls do nothing.
    pub fn cancel(&self) {
        if self.shared.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let callbacks = std::mem::take(
            &mut *self
                .shared
                .callbacks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for callback in callbacks.into_values() {
            callback();
        }
        self.shared.notify.notify_waiters();
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Runs `callback` when the token fires, or right away when it already has. The callback is
    /// dropped unrun when the returned guard is dropped first, so register for exactly as long as
    /// the work it interrupts lives.
    #[must_use = "the callback is unregistered when the guard is dropped"]
    pub fn on_cancel(&self, callback: impl FnOnce() + Send + 'static) -> CancelGuard {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut callbacks = self
                .shared
                .callbacks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Checked under the lock `cancel` takes, so a callback is either taken by `cancel`
            // or run here, never lost.
            if !self.is_cancelled() {
                callbacks.insert(id, Box::new(callback));
                return CancelGuard {
                    shared: Some(self.shared.clone()),
                    id,
                };
            }
        }
        callback();
        CancelGuard { shared: None, id }
    }

    /// Resolves once the token has fired.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `cancel` between the check and the await still
            // wakes this waiter (tokio::sync::Notify::notified docs).
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps a [`Cancel::on_cancel`] callback registered; dropping it unregisters the callback.
pub struct CancelGuard {
    shared: Option<Arc<Shared>>,
    id: u64,
}

impl std::fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelGuard").field("id", &self.id).finish()
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared
                .callbacks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn callbacks_run_once_on_cancel_and_not_after_their_guard_is_dropped() {
        let cancel = Cancel::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = |runs: &Arc<AtomicUsize>| {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let kept = cancel.on_cancel(counted(&runs));
        drop(cancel.on_cancel(counted(&runs)));
        cancel.cancel();
        cancel.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(cancel.clone().is_cancelled());
        // Registered after the fact: runs at once.
        let _late = cancel.on_cancel(counted(&runs));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        drop(kept);
    }

    #[tokio::test]
    async fn waiters_wake_when_cancelled_from_another_thread() {
        let cancel = Cancel::new();
        let other = cancel.clone();
        let thread = std::thread::spawn(move || other.cancel());
        cancel.cancelled().await;
        assert!(cancel.is_cancelled());
        thread.join().map_err(|_| "thread panicked").unwrap_or(());
    }
}
