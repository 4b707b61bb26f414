//! What differs between the typed layer's two faces, and nothing else: how to wait, and where
//! a background refresh runs.
//!
//! The logic is written once, in [`AsyncTypedCache`](crate::AsyncTypedCache). The blocking
//! [`TypedCache`](crate::TypedCache) runs it on the caller's thread with
//! [`cache_core::block_on`] over a blocking engine; there, a wait is a thread sleep and a
//! background refresh gets a thread of its own. On the async face a wait is a timer and a
//! refresh a task, both on tokio (the `tokio` feature); `cache-core` stays runtime-free.

use std::future::Future;
use std::time::Duration;

/// The face a typed cache serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    /// `TypedCache`: futures are driven by `block_on` on the caller's thread.
    Blocking,
    /// `AsyncTypedCache`: futures are awaited by the caller's executor.
    Async,
}

/// What [`Face::spawn`] did with a task.
pub(crate) enum Spawned<F> {
    /// It runs in the background.
    Yes,
    /// There is nowhere to run it (an async face outside a tokio runtime, or without the
    /// `tokio` feature): the caller gets it back and runs it itself.
    Nowhere(F),
    /// A thread could not be started: the task was dropped.
    Refused,
}

impl Face {
    /// Waits `pause`: the thread sleeps on the blocking face (it is the caller's own thread,
    /// inside `block_on`); the task sleeps on tokio's timer on the async face.
    pub(crate) async fn sleep(self, pause: Duration) {
        match self {
            Face::Blocking => std::thread::sleep(pause),
            Face::Async => {
                // The async face takes leases (the only thing that waits) with the `tokio`
                // feature alone; the builder offers `lease` only then.
                #[cfg(feature = "tokio")]
                tokio::time::sleep(pause).await;
                #[cfg(not(feature = "tokio"))]
                let _ = pause;
            }
        }
    }

    /// Runs `task` in the background: on a thread of its own (named `name`) on the blocking
    /// face, as a task on the current tokio runtime on the async face.
    pub(crate) fn spawn<F>(self, name: &str, task: F) -> Spawned<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Face::Blocking => {
                let started = std::thread::Builder::new()
                    .name(name.to_owned())
                    .spawn(move || cache_core::block_on(task));
                match started {
                    Ok(_) => Spawned::Yes,
                    Err(_) => Spawned::Refused,
                }
            }
            Face::Async => {
                #[cfg(feature = "tokio")]
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(task);
                    return Spawned::Yes;
                }
                Spawned::Nowhere(task)
            }
        }
    }
}
