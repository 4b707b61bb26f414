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
    /// Its caller sleeps on `wake`, and may lead when woken.
    waiting: bool,
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
}

/// A request written on a link, whose replies [`Link::receive`] collects.
pub(crate) struct Ticket {
    /// `None` for a request that expects no reply.
    id: Option<u64>,
    wake: Arc<Condvar>,
    /// The link had been taken idle from the pool, and no reply had arrived since, when the
    /// request was queued.
    pub(crate) after_idle: bool,
}

/// A connection blocking callers share.
pub(crate) struct Link<R> {
    writer: Mutex<Conn>,
    state: Mutex<State<R>>,
    /// Set once the link is closed, for the pool (read without the state lock).
    dead: AtomicBool,
    /// The pool handed the link out idle and no reply arrived since: a dead socket now may
    /// mean the server closed it while it sat in the pool.
    unproven: AtomicBool,
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

    fn taken_idle(&self) {
        self.unproven.store(true, Ordering::Relaxed);
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
            }),
            dead: AtomicBool::new(false),
            unproven: AtomicBool::new(false),
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
            let after_idle = self.unproven.load(Ordering::Relaxed);
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
                    waiting: false,
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
                // A leader blocked reading wakes up at once.
                writer.shutdown();
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
                // Someone else reads: its replies will be read and dropped.
                if let Some(expected) = state.queue.iter_mut().find(|e| e.id == id) {
                    expected.abandon();
                }
                return Err(Broken::Timeout);
            };
            Self::set_waiting(&mut state, id, true);
            state = ticket
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            Self::set_waiting(&mut state, id, false);
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
            if let Err(why) = self.dispatch(&mut state, &mut reader, decoder) {
                self.kill(&mut state, &why);
                // Replies handed out before the fault stand (as on a connection of its own,
                // whose next request would have found the stray bytes).
                if !state.done.iter().any(|(done, _)| *done == id) {
                    return Err(why);
                }
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
                if self.stalled(&state) {
                    self.kill(&mut state, &Broken::Timeout);
                } else {
                    self.hand_over(&mut state, reader);
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
        state.queue.front().is_some_and(|e| {
            e.abandoned
                && e.deadline
                    .checked_add(self.timeout)
                    .is_some_and(|overdue| overdue <= Instant::now())
        })
    }

    fn set_waiting(state: &mut State<R>, id: u64, waiting: bool) {
        if let Some(expected) = state.queue.iter_mut().find(|e| e.id == id) {
            expected.waiting = waiting;
        }
    }

    /// Puts the read side back and wakes the oldest caller asleep waiting for its replies, to
    /// lead next (a caller not asleep takes the read side when it comes to wait). When replies
    /// are still due but no caller waits for any, the link is closed instead.
    fn hand_over(&self, state: &mut State<R>, reader: Conn) {
        state.reader = Some(reader);
        if Self::orphaned(state) {
            self.kill(state, &Broken::Timeout);
        } else if let Some(next) = state.queue.iter().find(|e| !e.abandoned && e.waiting) {
            next.wake.notify_one();
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
        &self,
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
            if self.unproven.load(Ordering::Relaxed) {
                self.unproven.store(false, Ordering::Relaxed);
            }
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
            Ok(true) => Ok(()),
            Ok(false) => Err(Broken::Protocol(ProtocolError::Unexpected(
                "a reply arrived that no request asked for".into(),
            ))),
            Err(e) => Err(Broken::Protocol(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    /// Replies are lines.
    #[derive(Debug)]
    struct Lines;

    impl Decode for Lines {
        type Reply = String;

        fn decode(
            &self,
            input: &[u8],
            _limits: &ReplyLimits,
        ) -> Result<crate::protocol::Decoded<String>, ProtocolError> {
            Ok(match input.iter().position(|b| *b == b'\n') {
                Some(end) => crate::protocol::Decoded::Reply(
                    String::from_utf8_lossy(&input[..end]).into_owned(),
                    end + 1,
                ),
                None => crate::protocol::Decoded::Incomplete {
                    needed: input.len() + 1,
                },
            })
        }
    }

    /// A link to a server that answers each line with the line itself, after sleeping the
    /// milliseconds a line `sleep:N:text` asks for.
    fn link(timeout: Duration) -> Arc<Link<String>> {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        std::thread::spawn(move || {
            let mut out = theirs.try_clone().expect("clone");
            for line in BufReader::new(theirs).lines() {
                let Ok(line) = line else { return };
                let text = match line.strip_prefix("sleep:") {
                    Some(rest) => {
                        let (ms, text) = rest.split_once(':').unwrap_or((rest, ""));
                        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                        text.to_string()
                    }
                    None => line,
                };
                if writeln!(out, "{text}").is_err() {
                    return;
                }
            }
        });
        Arc::new(Link::new(Conn::new(Box::new(ours)), timeout))
    }

    fn call(link: &Link<String>, line: &str, within: Duration) -> Result<Vec<String>, Broken> {
        let request = Request::new(format!("{line}\n").into_bytes(), 1, ReplyLimits::scalar(64));
        let deadline = Deadline::after(within);
        let ticket = link
            .send(&Lines, &request, &deadline)
            .map_err(|(why, _, _)| why)?;
        link.receive(&Lines, ticket, &deadline)
    }

    #[test]
    fn many_callers_on_one_link_each_get_their_own_replies() {
        let link = link(Duration::from_secs(5));
        std::thread::scope(|s| {
            for t in 0..8 {
                let link = &link;
                s.spawn(move || {
                    for i in 0..300 {
                        let token = format!("{t}-{i}");
                        let got = call(link, &token, Duration::from_secs(5));
                        assert_eq!(got.ok(), Some(vec![token]));
                    }
                });
            }
        });
        assert!(!link.is_dead());
    }

    #[test]
    fn a_caller_that_gives_up_leaves_the_stream_in_step() {
        let link = link(Duration::from_secs(5));
        std::thread::scope(|s| {
            let slow = s.spawn(|| call(&link, "sleep:400:late", Duration::from_millis(100)));
            // Queued behind the slow request, with time enough to wait it out.
            std::thread::sleep(Duration::from_millis(30));
            let patient = call(&link, "mine", Duration::from_secs(5));
            assert!(matches!(slow.join().ok(), Some(Err(Broken::Timeout))));
            assert_eq!(patient.ok(), Some(vec!["mine".to_string()]));
        });
        assert!(
            !link.is_dead(),
            "a caller still waited when the other gave up"
        );
        let next = call(&link, "next", Duration::from_secs(5));
        assert_eq!(next.ok(), Some(vec!["next".to_string()]));
    }

    #[test]
    fn the_last_caller_giving_up_closes_the_link() {
        let link = link(Duration::from_secs(5));
        let started = Instant::now();
        let slow = call(&link, "sleep:400:late", Duration::from_millis(100));
        assert!(matches!(slow, Err(Broken::Timeout)), "{slow:?}");
        assert!(
            started.elapsed() < Duration::from_millis(350),
            "gave up at its deadline, not when the reply came"
        );
        assert!(
            link.is_dead(),
            "a reply is still due and nobody waits for it"
        );
        assert!(call(&link, "after", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_reply_nobody_asked_for_closes_the_link() {
        let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
        let link: Link<String> = Link::new(Conn::new(Box::new(ours)), Duration::from_secs(1));
        let answer = std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(theirs.try_clone().expect("clone"));
            let _ = reader.read_line(&mut line);
            // Two replies to one request.
            let _ = theirs.write_all(b"one\ntwo\n");
            std::thread::sleep(Duration::from_millis(300));
        });
        let first = call(&link, "q", Duration::from_secs(1));
        assert_eq!(first.ok(), Some(vec!["one".to_string()]));
        std::thread::sleep(Duration::from_millis(50));
        let second = call(&link, "r", Duration::from_secs(1));
        assert!(
            matches!(second, Err(Broken::Protocol(_))),
            "the extra reply is never taken for the next request's: {second:?}"
        );
        assert!(link.is_dead());
        let _ = answer.join();
    }
}
