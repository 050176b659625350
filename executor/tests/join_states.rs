//! Every short sequence of what a user can do to a spawned task and its
//! [`JoinHandle`] (run a crank, abort, poll the handle, drop it, let the
//! task's awaited event happen) against a plain model of the join state:
//! for a task that is ready at once, one that panics, and two that wait
//! first. The handle yields what the model says when it yields, the task's
//! future is dropped exactly once, and `is_finished` agrees with the model.
//!
//! `JoinHandle` is `!Send` (an `Rc` and `RefCell`s): its transitions happen
//! on one thread, so they are enumerated here rather than model-checked
//! with loom, which has no interleaving to explore.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tally::{JoinError, JoinHandle, LocalReactor};

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ready,
    Panic,
    WaitThenReady,
    WaitThenPanic,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Crank,
    Abort,
    Poll,
    Drop,
    Release,
}

const ACTIONS: [Action; 5] =
    [Action::Crank, Action::Abort, Action::Poll, Action::Drop, Action::Release];

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Output(u32),
    Panicked,
    Cancelled,
}

/// The model of one task and its handle.
#[derive(Debug)]
struct Model {
    behaviour: Behaviour,
    queued: bool,
    aborted: bool,
    released: bool,
    waiting: bool,
    outcome: Option<Outcome>,
    handle: bool,
    taken: bool,
}

impl Model {
    fn new(behaviour: Behaviour) -> Model {
        Model {
            behaviour,
            queued: true,
            aborted: false,
            released: false,
            waiting: false,
            outcome: None,
            handle: true,
            taken: false,
        }
    }

    fn crank(&mut self) {
        if !std::mem::take(&mut self.queued) || self.outcome.is_some() {
            return;
        }
        if self.aborted {
            self.outcome = Some(Outcome::Cancelled);
            return;
        }
        let finish = match self.behaviour {
            Behaviour::Ready => Some(Outcome::Output(42)),
            Behaviour::Panic => Some(Outcome::Panicked),
            Behaviour::WaitThenReady if self.released => Some(Outcome::Output(7)),
            Behaviour::WaitThenPanic if self.released => Some(Outcome::Panicked),
            _ => None,
        };
        self.waiting = finish.is_none();
        self.outcome = finish;
    }

    fn release(&mut self) {
        self.released = true;
        if std::mem::take(&mut self.waiting) && self.outcome.is_none() {
            self.queued = true;
        }
    }

    fn abort(&mut self) {
        if self.outcome.is_none() {
            self.aborted = true;
            self.queued = true;
        }
    }
}

/// The event a waiting task awaits: released by the main future.
#[derive(Default)]
struct Event {
    released: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Event {
    fn release(&self) {
        self.released.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct WaitFor(Rc<Event>);

impl Future for WaitFor {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.released.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Pending once, waking itself: lets the executor run exactly one crank.
struct Crank(bool);

impl Future for Crank {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Counts drops of the task's future (it owns one of these).
struct DropCount(Rc<Cell<u32>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn outcome(result: Result<u32, JoinError>) -> Outcome {
    match result {
        Ok(n) => Outcome::Output(n),
        Err(JoinError::Panicked(msg)) => {
            assert_eq!(msg, "task panics on purpose");
            Outcome::Panicked
        }
        Err(JoinError::Cancelled) => Outcome::Cancelled,
    }
}

fn spawn(behaviour: Behaviour, event: Rc<Event>, drops: Rc<Cell<u32>>) -> JoinHandle<u32> {
    // Made outside the body, so that a future dropped before its first poll
    // drops it too.
    let guard = DropCount(drops);
    tally::spawn(async move {
        let _guard = guard;
        match behaviour {
            Behaviour::Ready => 42,
            Behaviour::Panic => panic!("task panics on purpose"),
            Behaviour::WaitThenReady => {
                WaitFor(event).await;
                7
            }
            Behaviour::WaitThenPanic => {
                WaitFor(event).await;
                panic!("task panics on purpose")
            }
        }
    })
}

async fn check(behaviour: Behaviour, actions: &[Action]) {
    let event = Rc::new(Event::default());
    let drops = Rc::new(Cell::new(0));
    let mut handle = Some(spawn(behaviour, event.clone(), drops.clone()));
    let mut model = Model::new(behaviour);
    for &action in actions {
        match action {
            Action::Crank => {
                Crank(false).await;
                model.crank();
            }
            Action::Abort => {
                if let Some(h) = &handle {
                    h.abort();
                    model.abort();
                }
            }
            Action::Poll => {
                if let Some(h) = handle.as_mut().filter(|_| !model.taken) {
                    let polled =
                        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *h).poll(cx))).await;
                    match polled {
                        Poll::Ready(result) => {
                            assert_eq!(Some(outcome(result)), model.outcome, "{model:?}");
                            model.taken = true;
                        }
                        Poll::Pending => assert_eq!(model.outcome, None, "{model:?}"),
                    }
                }
            }
            Action::Drop => {
                handle = None;
                model.handle = false;
            }
            Action::Release => {
                event.release();
                model.release();
            }
        }
        if let Some(h) = &handle {
            assert_eq!(h.is_finished(), model.outcome.is_some(), "{model:?} after {action:?}");
        }
        // Dropped exactly when it ended, never twice.
        assert_eq!(drops.get(), u32::from(model.outcome.is_some()), "{model:?} after {action:?}");
    }
    // Let everything finish: release the event and crank until the task ends.
    event.release();
    model.release();
    for _ in 0..3 {
        Crank(false).await;
        model.crank();
    }
    assert!(model.outcome.is_some(), "{model:?}");
    assert_eq!(drops.get(), 1, "{behaviour:?} {actions:?}");
    if let Some(h) = handle.filter(|_| !model.taken) {
        assert_eq!(Some(outcome(h.await)), model.outcome, "{behaviour:?} {actions:?}");
    }
}

fn sequences(len: usize) -> Vec<Vec<Action>> {
    let mut all = vec![Vec::new()];
    for _ in 0..len {
        let mut next = Vec::new();
        for seq in &all {
            for &a in &ACTIONS {
                let mut s = seq.clone();
                s.push(a);
                next.push(s);
            }
        }
        all = next;
    }
    all
}

#[test]
fn every_sequence_of_four_actions_matches_the_model() {
    // The panicking behaviours panic hundreds of times on purpose.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"task panics on purpose") {
            default(info);
        }
    }));
    let rt = LocalReactor::new().unwrap();
    let mut runs = 0;
    for behaviour in
        [Behaviour::Ready, Behaviour::Panic, Behaviour::WaitThenReady, Behaviour::WaitThenPanic]
    {
        for len in 0..=4 {
            for actions in sequences(len) {
                rt.block_on(check(behaviour, &actions));
                runs += 1;
            }
        }
    }
    let _ = std::panic::take_hook();
    assert_eq!(runs, 4 * (1 + 5 + 25 + 125 + 625));
}

#[test]
fn live_tasks_counts_spawned_tasks_until_they_end() {
    let rt = LocalReactor::new().unwrap();
    assert_eq!(rt.live_tasks(), 0);
    let event = Rc::new(Event::default());
    let waiting = rt.spawn(WaitFor(event.clone()));
    let aborted = rt.spawn(WaitFor(Rc::new(Event::default())));
    drop(rt.spawn(async { 1 }));
    assert_eq!(rt.live_tasks(), 3);
    rt.block_on(async {
        Crank(false).await;
        // The detached one ran to its end; the other two wait.
        assert_eq!(rt.live_tasks(), 2);
        aborted.abort();
        Crank(false).await;
        assert_eq!(rt.live_tasks(), 1);
        event.release();
        waiting.await.unwrap();
    });
    assert_eq!(rt.live_tasks(), 0);
}
