//! A pooled connection that blocking callers share (leader/follower).
//!
//! Each caller writes its whole request under the write lock, having first put what it expects
//! (its reply count and limits) at the back of the link's queue, so the queue is in the order
//! of the bytes on the wire. Then it waits for its replies. One caller at a time reads: the
//! *leader* takes the read side, reads, decodes every whole reply in order and hands each to
//! the request at the front of the queue, waking that request's caller. Once its own replies
//! are in, the leader puts the read side back and wakes the oldest caller still waiting, who
//! leads next. A caller alone on a link does exactly what a connection of its own would: write,
//! read, no waiting on anyone.
//!
//! Every caller keeps its own deadline. A caller whose deadline passes gives up its place
//! (*abandons* it): its replies are still read and then dropped, so the stream stays in step.
//! The link is closed (every caller on it fails) when the socket fails or a reply cannot be
//! trusted, when nobody left on it is waiting for a reply although some are still due (the
//! last caller timed out, as a connection of its own would be dropped), or when the oldest
//! abandoned request is a whole `timeout` past its deadline (the server stalled).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::Broken;
use crate::blocking::Conn;
use crate::exchange::{Deadline, Request};
use crate::pool::Pooled;
use crate::protocol::{Decode, ProtocolError, ReplyLimits};

/// What a request on the link waits for.
struct Expected<R> {
    id: u64,
    limits: ReplyLimits,
    replies: usize,
    /// Replies read so far.
    seen: usize,
    got: Vec<R>,
    deadline: Instant,
    /// Its caller gave up: its replies are read and dropped.
    abandoned: bool,
    wake: Arc<Condvar>,
}

impl<R> Expected<R> {
    fn abandon(&mut self) {
        self.abandoned = true;
        self.got = Vec::new();
    }
}

struct State<R> {
    /// The read side, absent while a leader reads.
    reader: Option<Conn>,
    /// Requests written (or being written) and not yet answered in full, oldest first.
    queue: VecDeque<Expected<R>>,
    /// Answers not yet collected by their callers.
    done: Vec<(u64, Result<Vec<R>, Broken>)>,
    next_id: u64,
    /// Why the link was closed.
    dead: Option<Broken>,
    /// No reply arrived since the link last went idle: a failure now may mean the server
    /// closed it while it sat idle.
    idle: bool,
}

/// A request written on a link, whose replies [`Link::receive`] collects.
pub(crate) struct Ticket {
    /// `None` for a request that expects no reply.
    id: Option<u64>,
    wake: Arc<Condvar>,
    /// The link had been idle when the request was queued.
    pub(crate) after_idle: bool,
}

/// A connection blocking callers share.
pub(crate) struct Link<R> {
    writer: Mutex<Conn>,
    state: Mutex<State<R>>,
    /// Set once the link is closed, for the pool (read without the state lock).
    dead: AtomicBool,
    shareable: bool,
    /// The operation timeout: how long past its deadline an abandoned request may stay
    /// unanswered before the link counts as stalled.
    timeout: Duration,
}

impl<R> Pooled for Link<R> {
    fn shareable(&self) -> bool {
        self.shareable
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// How long a write may wait for another caller's write on the same link, at most.
fn lock_wait<'m, T>(mutex: &'m Mutex<T>, deadline: &Deadline) -> Result<MutexGuard<'m, T>, Broken> {
    // Writes are bounded by their own deadlines, so the lock is held briefly; poll it with
    // short sleeps rather than block past this caller's deadline.
    let mut pause = Duration::from_micros(20);
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let left = deadline.remaining().ok_or(Broken::Timeout)?;
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

impl<R> Link<R> {
    /// A link over `conn` (opened and handshaken). Its stream is split into a read side and a
    /// write side when it can be; otherwise (TLS) the link carries one caller at a time.
    pub(crate) fn new(conn: Conn, timeout: Duration) -> Self {
        let (reader, writer, shareable) = conn.split();
        Self {
            writer: Mutex::new(writer),
            state: Mutex::new(State {
                reader: Some(reader),
                queue: VecDeque::new(),
                done: Vec::new(),
                next_id: 0,
                dead: None,
                idle: false,
            }),
            dead: AtomicBool::new(false),
            shareable,
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the link for `why`: every caller waiting on it gets the error.
    fn kill(&self, state: &mut State<R>, why: &Broken) {
        if state.dead.is_none() {
            state.dead = Some(why.duplicate());
            self.dead.store(true, Ordering::Release);
        }
        for expected in state.queue.drain(..) {
            if !expected.abandoned {
                state.done.push((expected.id, Err(why.duplicate())));
                expected.wake.notify_one();
            }
        }
        // A leader blocked in a read wakes up at once.
        if let Ok(writer) = self.writer.try_lock() {
            writer.shutdown();
        }
    }

    /// Writes `request` within `deadline`, after queueing what it expects. On failure, also
    /// whether any byte was written and whether the link had been idle.
    pub(crate) fn send<D: Decode<Reply = R>>(
        &self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> Result<Ticket, (Broken, bool, bool)> {
        let mut writer = lock_wait(&self.writer, deadline).map_err(|b| (b, false, false))?;
        let wake = Arc::new(Condvar::new());
        let ticket = {
            let mut state = self.lock();
            let after_idle = state.idle && state.queue.is_empty();
            if let Some(why) = &state.dead {
                return Err((why.duplicate(), false, after_idle));
            }
            if state.queue.is_empty()
                && let Some(reader) = state.reader.as_mut()
            {
                // Bytes nobody asked for: the stream is out of step with its requests.
                let stray = match reader.buf.holds_only_pushes(decoder) {
                    Ok(true) => None,
                    Ok(false) => Some(Broken::Protocol(ProtocolError::Unexpected(
                        "bytes arrived before the request".into(),
                    ))),
                    Err(e) => Some(Broken::Protocol(e)),
                };
                if let Some(why) = stray {
                    self.kill(&mut state, &why);
                    return Err((why, false, after_idle));
                }
            }
            let id = (request.replies > 0).then(|| {
                let id = state.next_id;
                state.next_id += 1;
                state.queue.push_back(Expected {
                    id,
                    limits: request.limits,
                    replies: request.replies,
                    seen: 0,
                    got: Vec::with_capacity(request.replies),
                    deadline: deadline.instant(),
                    abandoned: false,
                    wake: Arc::clone(&wake),
                });
                id
            });
            Ticket {
                id,
                wake,
                after_idle,
            }
        };
        let mut sent = false;
        match writer.send(&request.bytes, deadline, &mut sent) {
            Ok(()) => Ok(ticket),
            Err(why) => {
                drop(writer);
                let mut state = self.lock();
                self.kill(&mut state, &why);
                if let Some(id) = ticket.id {
                    state.done.retain(|(done, _)| *done != id);
                }
                Err((why, sent, ticket.after_idle))
            }
        }
    }

    /// Waits for the replies of `ticket`'s request until `deadline`, reading them itself
    /// when nobody else is reading.
    pub(crate) fn receive<D: Decode<Reply = R>>(
        &self,
        decoder: &D,
        ticket: Ticket,
        deadline: &Deadline,
    ) -> Result<Vec<R>, Broken> {
        let Some(id) = ticket.id else {
            return Ok(Vec::new());
        };
        let mut state = self.lock();
        loop {
            if let Some(at) = state.done.iter().position(|(done, _)| *done == id) {
                return state.done.swap_remove(at).1;
            }
            if let Some(why) = &state.dead {
                return Err(why.duplicate());
            }
            if let Some(reader) = state.reader.take() {
                return self.lead(state, reader, decoder, id, deadline);
            }
            let Some(left) = deadline.remaining() else {
                self.abandon(&mut state, id);
                return Err(Broken::Timeout);
            };
            state = ticket
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Reads for everyone until request `id` is answered or its deadline passes.
    fn lead<'s, D: Decode<Reply = R>>(
        &'s self,
        mut state: MutexGuard<'s, State<R>>,
        mut reader: Conn,
        decoder: &D,
        id: u64,
        deadline: &Deadline,
    ) -> Result<Vec<R>, Broken> {
        let mut last_look = false;
        loop {
            if let Err(why) = Self::dispatch(&mut state, &mut reader, decoder) {
                self.kill(&mut state, &why);
                return Err(why);
            }
            if let Some(at) = state.done.iter().position(|(done, _)| *done == id) {
                let answer = state.done.swap_remove(at).1;
                self.hand_over(&mut state, reader);
                return answer;
            }
            if let Some(why) = &state.dead {
                return Err(why.duplicate());
            }
            if last_look || self.stalled(&state) {
                // Out of time (what had arrived was read), or the server stalled.
                if let Some(expected) = state.queue.iter_mut().find(|e| e.id == id) {
                    expected.abandon();
                }
                let stalled = self.stalled(&state);
                self.hand_over(&mut state, reader);
                if stalled || Self::orphaned(&state) {
                    self.kill(&mut state, &Broken::Timeout);
                }
                return Err(Broken::Timeout);
            }
            drop(state);
            let read = reader.fill(deadline, false);
            state = self.lock();
            match read {
                Ok(()) => {}
                Err(Broken::Timeout) => {
                    // One short look at what has already arrived, then give up.
                    drop(state);
                    let look = reader.fill(deadline, true);
                    state = self.lock();
                    match look {
                        Ok(()) | Err(Broken::Timeout) => last_look = true,
                        Err(why) => {
                            self.kill(&mut state, &why);
                            return Err(why);
                        }
                    }
                }
                Err(why) => {
                    self.kill(&mut state, &why);
                    return Err(why);
                }
            }
        }
    }

    /// The oldest request is an abandoned one a whole `timeout` past its deadline.
    fn stalled(&self, state: &State<R>) -> bool {
        state
            .queue
            .front()
            .is_some_and(|e| e.abandoned && e.deadline + self.timeout <= Instant::now())
    }

    /// Puts the read side back and wakes the oldest caller still waiting, to lead next.
    fn hand_over(&self, state: &mut State<R>, reader: Conn) {
        state.reader = Some(reader);
        if let Some(next) = state.queue.iter().find(|e| !e.abandoned) {
            next.wake.notify_one();
        }
    }

    /// Request `id`'s caller gave up while another caller was reading (or about to).
    fn abandon(&self, state: &mut State<R>, id: u64) {
        if let Some(expected) = state.queue.iter_mut().find(|e| e.id == id) {
            expected.abandon();
        }
        if state.reader.is_some() && Self::orphaned(state) {
            self.kill(state, &Broken::Timeout);
        }
    }

    /// Replies are still due but no caller waits for any: nobody would read them, and the
    /// next caller would wait behind them. The link is closed, as a connection of its own
    /// would be dropped after a timeout.
    fn orphaned(state: &State<R>) -> bool {
        !state.queue.is_empty() && state.queue.iter().all(|e| e.abandoned)
    }

    /// Hands every whole reply in the read buffer to the request it answers, in order.
    fn dispatch<D: Decode<Reply = R>>(
        state: &mut State<R>,
        reader: &mut Conn,
        decoder: &D,
    ) -> Result<(), Broken> {
        while let Some(head) = state.queue.front_mut() {
            let Some(reply) = reader
                .buf
                .decode(decoder, &head.limits)
                .map_err(Broken::Protocol)?
            else {
                return Ok(());
            };
            state.idle = false;
            decoder.check(&reply, head.seen).map_err(Broken::Protocol)?;
            head.seen += 1;
            if !head.abandoned {
                head.got.push(reply);
            }
            if head.seen == head.replies
                && let Some(done) = state.queue.pop_front()
                && !done.abandoned
            {
                state.done.push((done.id, Ok(done.got)));
                done.wake.notify_one();
            }
        }
        // Nothing is expected: only pushes may be buffered.
        match reader.buf.holds_only_pushes(decoder) {
            Ok(true) => {
                state.idle = true;
                Ok(())
            }
            Ok(false) => Err(Broken::Protocol(ProtocolError::Unexpected(
                "a reply arrived that no request asked for".into(),
            ))),
            Err(e) => Err(Broken::Protocol(e)),
        }
    }
}
