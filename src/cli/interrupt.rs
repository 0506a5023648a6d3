//! Ctrl-C (SIGINT) and SIGTERM during `kiln build`, in every phase.
//!
//! Before the build's steps are planned (reading the Dockerfile, perhaps from a FIFO that never
//! ends; parsing, planning, the checks, compiling, `--dry-run`, `--call`), nothing kiln does
//! needs undoing: the store's writes are crash-safe and staging left behind is removed by the
//! next clean-up. A signal then ends kiln at once with docker's exit code, 128 + the signal
//! (130 for Ctrl-C, 143 for SIGTERM). Once the steps are planned ([`BuildEvent::Planned`]), a
//! signal cancels the build instead: running steps are killed and nothing half-written is left
//! visible; a second signal ends kiln at once.
//!
//! The handler is installed when the command starts, before anything is read: installed only
//! around the solve, as it was, a signal during a long planning phase was swallowed (the build
//! went on for minutes after SIGTERM).

use super::term::errln;
use kiln::builder::{BuildEvent, Progress};
use kiln::solver::Cancel;
use std::sync::{Arc, Mutex, PoisonError};

/// What a signal does now.
enum Mode {
    /// End the process.
    Exit,
    /// Cancel the build (a second signal ends the process).
    Cancel(Cancel),
}

/// The installed handler; [`Interrupt::cancels`] moves it from exiting to canceling.
#[derive(Clone)]
pub struct Interrupt {
    mode: Arc<Mutex<Mode>>,
}

impl Interrupt {
    /// Installs the handler for SIGINT and SIGTERM: until [`Interrupt::cancels`] is called, a
    /// signal ends the process.
    pub fn install() -> Interrupt {
        let interrupt = Interrupt {
            mode: Arc::new(Mutex::new(Mode::Exit)),
        };
        let handler = interrupt.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-signals".into())
            .spawn(move || handler.listen());
        // Without the thread, a signal keeps its default action: it ends kiln, which the store
        // survives.
        drop(spawned);
        interrupt
    }

    /// From now on a signal cancels `cancel` (the first time) instead of ending the process.
    pub fn cancels(&self, cancel: &Cancel) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = Mode::Cancel(cancel.clone());
    }

    /// A [`Progress`] that forwards to `inner` and hands signals to `cancel` once the build's
    /// steps are planned.
    pub fn progress(&self, inner: Arc<dyn Progress>, cancel: &Cancel) -> Arc<dyn Progress> {
        Arc::new(CancelOncePlanned {
            inner,
            interrupt: self.clone(),
            cancel: cancel.clone(),
        })
    }

    fn listen(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            loop {
                let number = tokio::select! {
                    _ = interrupt.recv() => libc::SIGINT,
                    _ = terminate.recv() => libc::SIGTERM,
                };
                self.on_signal(number);
            }
        });
    }

    fn on_signal(&self, number: i32) {
        let mode = self.mode.lock().unwrap_or_else(PoisonError::into_inner);
        match &*mode {
            Mode::Cancel(cancel) if !cancel.is_cancelled() => {
                let cancel = cancel.clone();
                drop(mode);
                let _ = errln!("kiln: canceling the build");
                cancel.cancel();
            }
            Mode::Cancel(_) => {
                let _ = errln!("kiln: interrupted again; exiting");
                std::process::exit(128 + number);
            }
            Mode::Exit => {
                let _ = errln!("kiln: interrupted");
                std::process::exit(128 + number);
            }
        }
    }
}

struct CancelOncePlanned {
    inner: Arc<dyn Progress>,
    interrupt: Interrupt,
    cancel: Cancel,
}

impl Progress for CancelOncePlanned {
    fn event(&self, event: BuildEvent) {
        if matches!(event, BuildEvent::Planned { .. }) {
            self.interrupt.cancels(&self.cancel);
        }
        self.inner.event(event);
    }
}
