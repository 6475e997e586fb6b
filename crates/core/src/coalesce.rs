//! Gathering concurrent calls into one round trip. Under load many tasks make the same small call at once
//! (claim an order, complete it, enqueue its job); each call as its own statement or script costs a round
//! trip and, in PostgreSQL, a commit. A `Coalescer` lets them queue while the previous flush runs and hands
//! them over together: one `UPDATE ... WHERE id = ANY($1)`, one Lua script. Each caller still gets its own
//! answer, and only after the flush that carries its item. At low load a flush carries one item and costs
//! no waiting (there is no timer: a flush starts as soon as the runner is free).
//!
//! The flushes of one coalescer run one after the other, so at most one connection is busy with them.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

use crate::{Error, Result};

type Flush<I, O> = dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Result<Vec<O>>> + Send>> + Send + Sync;

/// Calls of one kind, gathered into batches of at most `max` items.
pub struct Coalescer<I, O> {
    name: &'static str,
    max: usize,
    /// Items that may wait at once; beyond, `submit` fails at once (unbounded when `None`).
    max_waiting: Option<usize>,
    state: Arc<Mutex<State<I, O>>>,
    flush: Arc<Flush<I, O>>,
}

impl<I, O> Clone for Coalescer<I, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            max: self.max,
            max_waiting: self.max_waiting,
            state: self.state.clone(),
            flush: self.flush.clone(),
        }
    }
}

struct State<I, O> {
    /// Each waiting item with its id (for `submit_until`) and where its answer goes.
    waiting: Vec<(u64, I, oneshot::Sender<Result<O>>)>,
    next_id: u64,
    running: bool,
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// `flush` does the batched call and answers one output per item, in the items' order.
    pub fn new<F, Fut>(name: &'static str, max: usize, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        Self {
            name,
            max: max.max(1),
            max_waiting: None,
            state: Arc::new(Mutex::new(State { waiting: Vec::new(), next_id: 0, running: false })),
            flush: Arc::new(move |items| Box::pin(flush(items))),
        }
    }

    /// Bounds the queue: with `max` items waiting, `submit` refuses at once instead of queueing.
    pub fn with_max_waiting(mut self, max: usize) -> Self {
        self.max_waiting = Some(max.max(1));
        self
    }

    /// Adds `item` to the next flush and waits for that flush's answer to it. A caller that stops waiting
    /// (its future dropped) takes its item out: a flush never carries an item nobody waits for.
    pub async fn submit(&self, item: I) -> Result<O> {
        let (_, answer) = self.enqueue(item)?;
        self.answer_of(answer).await
    }

    /// Like `submit`, but an item still waiting for its flush at `deadline` is taken out and answered
    /// `expired()`; one a flush already carries is answered by that flush.
    pub async fn submit_until(
        &self,
        item: I,
        deadline: tokio::time::Instant,
        expired: impl FnOnce() -> Error,
    ) -> Result<O> {
        let (id, mut answer) = self.enqueue(item)?;
        tokio::select! {
            answered = &mut answer => self.unwrap_answer(answered),
            _ = tokio::time::sleep_until(deadline) => {
                let taken_out = {
                    let mut state = self.state.lock().expect("coalescer lock");
                    let at = state.waiting.iter().position(|(waiting, ..)| *waiting == id);
                    at.map(|at| state.waiting.remove(at)).is_some()
                };
                if taken_out {
                    return Err(expired());
                }
                self.answer_of(answer).await
            }
        }
    }

    /// Queues `item` (starting the runner if it is idle); its id and where its answer arrives.
    fn enqueue(&self, item: I) -> Result<(u64, oneshot::Receiver<Result<O>>)> {
        let (reply, answer) = oneshot::channel();
        let (id, start_runner) = {
            let mut state = self.state.lock().expect("coalescer lock");
            if self.max_waiting.is_some_and(|max| state.waiting.len() >= max) {
                return Err(Error::Unavailable(format!(
                    "the {} queue is full; try again shortly",
                    self.name
                )));
            }
            state.next_id += 1;
            let id = state.next_id;
            state.waiting.push((id, item, reply));
            (id, !std::mem::replace(&mut state.running, true))
        };
        if start_runner {
            // Not in the caller's span: the runner outlives this call and serves everyone's items.
            let runner = self.clone();
            tokio::spawn(tracing::Instrument::instrument(runner.run(), tracing::Span::none()));
        }
        Ok((id, answer))
    }

    async fn answer_of(&self, answer: oneshot::Receiver<Result<O>>) -> Result<O> {
        self.unwrap_answer(answer.await)
    }

    fn unwrap_answer(&self, answered: Result<Result<O>, oneshot::error::RecvError>) -> Result<O> {
        answered.unwrap_or_else(|_| Err(Error::Unavailable(format!("the {} batch was dropped", self.name))))
    }

    /// Flushes what is waiting, batch after batch, until nothing is.
    async fn run(self) {
        loop {
            // Lets the callers already on their way join this batch.
            tokio::task::yield_now().await;
            let batch: Vec<_> = {
                let mut state = self.state.lock().expect("coalescer lock");
                state.waiting.retain(|(_, _, reply)| !reply.is_closed());
                let take = state.waiting.len().min(self.max);
                if take == 0 {
                    state.running = false;
                    return;
                }
                state.waiting.drain(..take).collect()
            };
            let (items, replies): (Vec<I>, Vec<_>) =
                batch.into_iter().map(|(_, item, reply)| (item, reply)).unzip();
            let count = items.len();
            // In a task of its own: a panicking flush fails its batch (the callers get an error), not the runner.
            let answers = match tokio::spawn((self.flush)(items)).await {
                Ok(Ok(outputs)) if outputs.len() == count => outputs.into_iter().map(Ok).collect(),
                Ok(Ok(outputs)) => self.failed(count, format!("answered {} of {count} items", outputs.len())),
                Ok(Err(e)) => self.failed(count, e.to_string()),
                Err(e) => self.failed(count, e.to_string()),
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }

    fn failed(&self, count: usize, reason: String) -> Vec<Result<O>> {
        tracing::warn!(batch = self.name, count, %reason, "a batched call failed");
        (0..count).map(|_| Err(Error::Unavailable(format!("{} failed: {reason}", self.name)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_flushes_and_each_gets_its_own_answer() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let doubled = Coalescer::new("double", 64, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(items.into_iter().map(|i| i * 2).collect()) }
        });
        let calls = (0..200u32).map(|i| {
            let doubled = doubled.clone();
            async move { (i, doubled.submit(i).await.unwrap()) }
        });
        for (i, answer) in futures::future::join_all(calls).await {
            assert_eq!(answer, i * 2);
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((4..200).contains(&n), "200 concurrent calls in batches of at most 64 took {n} flushes");
    }

    #[tokio::test]
    async fn a_failed_or_short_flush_fails_each_of_its_callers() {
        let failing = Coalescer::new("failing", 8, |_: Vec<u8>| async {
            Err::<Vec<u8>, _>(Error::Unavailable("down".into()))
        });
        let err = failing.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("down"), "{err}");

        let short = Coalescer::new("short", 8, |_: Vec<u8>| async { Ok(Vec::<u8>::new()) });
        let err = short.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("answered 0 of 1"), "{err}");
    }

    /// On a paused clock: the first item's flush holds the queue past the second's deadline; the second is
    /// taken out and answered expired, and no flush ever carries it. One a flush carries is answered by it.
    #[tokio::test(start_paused = true)]
    async fn an_item_still_waiting_at_its_deadline_is_taken_out_and_never_flushed() {
        use std::time::Duration;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let slow = Coalescer::new("slow", 1, move |items: Vec<u32>| {
            recorded.lock().unwrap().extend(items.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(items)
            }
        });
        let now = tokio::time::Instant::now();
        let expired = || Error::NotSold("expired".into());
        let first = slow.submit_until(1, now + Duration::from_secs(1), expired);
        let second = slow.submit_until(2, now + Duration::from_secs(5), expired);
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.unwrap(), 1, "a carried item is answered by its flush, even past its deadline");
        assert!(matches!(second, Err(Error::NotSold(_))), "{second:?}");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(*seen.lock().unwrap(), vec![1], "the expired item was never flushed");
    }
}
