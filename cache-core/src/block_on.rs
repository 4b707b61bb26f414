//! Running a future to completion on the calling thread, without a runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Wakes a thread parked in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread.
///
/// This is how the blocking faces share the async code: a future whose I/O is done on the
/// calling thread (the remote engines' blocking transport, a [`NonBlocking`](crate::NonBlocking)
/// engine) is ready at its first poll, so this costs one poll and allocates nothing. Any other
/// future works too: the thread parks until it is woken. It is not a runtime: a future that
/// needs a runtime's timer or I/O (tokio's) must not be given to it.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return output;
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_runs_ready_and_pending_futures() {
        assert_eq!(block_on(async { 7 }), 7);
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let woken = std::thread::spawn(move || {
            if let Ok(waker) = rx.recv() {
                waker.wake();
            }
        });
        let mut polled = 0;
        let mut tx = Some(tx);
        let out = block_on(std::future::poll_fn(|cx| {
            polled += 1;
            match tx.take() {
                Some(tx) => {
                    let _ = tx.send(cx.waker().clone());
                    Poll::Pending
                }
                None => Poll::Ready(polled),
            }
        }));
        assert!(out >= 2, "{out}");
        woken.join().unwrap_or_default();
    }
}
