//! How a child tells its supervisor that it is gone: [`ExitGuard`], a value the child actor keeps
//! in its struct. Whichever way the actor ends — a handler returned after `ctx.stop()`, its
//! mailbox closed, or a handler panicked — actix drops the actor, the guard's `Drop` runs and
//! sends [`ChildExited`] to the supervisor. This is the only crash signal the supervisors use.
//!
//! ## The crash model (actix 0.13, actix-rt 2, tokio 1)
//!
//! - An actor on an `Arbiter` is one tokio task on that arbiter's `LocalSet`
//!   (`actix_rt::spawn` → `tokio::task::spawn_local`). A panic in a handler (or in `started`)
//!   unwinds out of the task's `poll`, where tokio's harness catches it. The arbiter's thread and
//!   every other actor on it carry on.
//! - tokio drops the task's future *inside* its panic guard, so while the actor and its
//!   [`ExitGuard`] are dropped `std::thread::panicking()` is true: that is how the guard knows
//!   the exit was a panic. The message comes from the hook [`install_panic_hook`] installs,
//!   which records it in a thread-local just before unwinding starts.
//! - actix's `ContextFut` has its own `Drop`: for an actor still alive it calls `ctx.stop()` and
//!   polls the actor once more, during the unwind. Because the context is then stopping, no
//!   queued message is handled, but the actor's `stopping()` and `stopped()` hooks do run. A
//!   panic there (or in any `Drop` of the actor's fields) is a panic during a panic, which aborts
//!   the process: keep `stopping`/`stopped` trivial and never panic in them.
//! - Messages already queued in a panicked actor's mailbox are dropped; callers waiting on `send`
//!   get `MailboxError::Closed`.
//!
//! The supervision tests (`tests/panics.rs`) check these points on real arbiters.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::PanicHookInfo;
use std::sync::Once;

use actix::{Message, Recipient};

/// Longest panic message kept (bytes, cut at a character boundary), so a huge panic payload
/// cannot bloat events, snapshots or logs.
pub const PANIC_MESSAGE_BYTES_MAX: usize = 1_024;

/// Why a child (or a supervisor) stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished its work and stopped by itself.
    Normal,
    /// It was asked to stop ([`crate::Shutdown`]) and did.
    Shutdown,
    /// A handler panicked; the panic message (with its location).
    Panicked(String),
    /// It stopped itself on an error it could not handle, or could not be started.
    Failed(String),
    /// A supervisor exceeded its restart intensity and gave up; passed to its parent.
    Escalated(String),
}

impl ExitReason {
    /// OTP's rule: `normal` and `shutdown` are normal exits; everything else is abnormal, and only
    /// an abnormal exit restarts a transient child.
    pub fn is_abnormal(&self) -> bool {
        match self {
            ExitReason::Normal | ExitReason::Shutdown => false,
            ExitReason::Panicked(_) | ExitReason::Failed(_) | ExitReason::Escalated(_) => true,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Panicked(message) => write!(f, "panicked: {message}"),
            ExitReason::Failed(message) => write!(f, "failed: {message}"),
            ExitReason::Escalated(message) => write!(f, "escalated: {message}"),
        }
    }
}

/// Sent by a child's [`ExitGuard`] to its supervisor when the child is gone. `generation` tells
/// the supervisor which incarnation exited, so a late message from an old one is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub child_id: String,
    pub generation: u64,
    pub reason: ExitReason,
}

/// Where an [`ExitGuard`] reports.
enum Notify {
    /// A supervisor (or an actor owning dynamic children).
    Parent(Recipient<ChildExited>),
    /// The root supervisor has no parent: the runtime's callback stands in for one.
    Callback(Box<dyn FnOnce(ExitReason) + Send>),
}

/// Kept by a child actor in its struct; reports the child's exit to its supervisor when dropped.
///
/// The reason sent is, in order: `Panicked(message)` if the thread is panicking (message from
/// [`install_panic_hook`]), else the reason given to [`ExitGuard::set_reason`], else `Normal`.
#[must_use = "an ExitGuard reports the exit when it is dropped: keep it in the actor"]
pub struct ExitGuard {
    child_id: String,
    generation: u64,
    reason: Option<ExitReason>,
    /// `None` only after `Drop` has sent the report.
    notify: Option<Notify>,
}

impl ExitGuard {
    /// A guard reporting to `parent` as `child_id`, incarnation `generation`.
    pub fn new(
        parent: Recipient<ChildExited>,
        child_id: impl Into<String>,
        generation: u64,
    ) -> Self {
        Self {
            child_id: child_id.into(),
            generation,
            reason: None,
            notify: Some(Notify::Parent(parent)),
        }
    }

    /// A guard that calls `callback` instead of messaging a parent (the root supervisor's).
    pub(crate) fn with_callback(
        child_id: impl Into<String>,
        callback: Box<dyn FnOnce(ExitReason) + Send>,
    ) -> Self {
        Self {
            child_id: child_id.into(),
            generation: 0,
            reason: None,
            notify: Some(Notify::Callback(callback)),
        }
    }

    /// The reason to report if the actor ends without panicking (default `Normal`). Call it
    /// before `ctx.stop()`; the last call wins.
    pub fn set_reason(&mut self, reason: ExitReason) {
        self.reason = Some(reason);
    }

    pub fn child_id(&self) -> &str {
        &self.child_id
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn exit_reason(&mut self) -> ExitReason {
        if std::thread::panicking() {
            let message = take_panic_message()
                .unwrap_or_else(|| "unknown panic (install_panic_hook was not called)".to_owned());
            return ExitReason::Panicked(message);
        }
        self.reason.take().unwrap_or(ExitReason::Normal)
    }
}

impl fmt::Debug for ExitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitGuard")
            .field("child_id", &self.child_id)
            .field("generation", &self.generation)
            .field("reason", &self.reason)
            .finish()
    }
}

impl Drop for ExitGuard {
    /// Must never panic: it often runs while the thread is already unwinding.
    fn drop(&mut self) {
        let reason = self.exit_reason();
        match self.notify.take() {
            // `do_send` queues even into a full mailbox and ignores a closed one (the parent is
            // gone too, so nobody is left to tell). One message per child incarnation, so the
            // parent's mailbox grows at most by its number of children.
            Some(Notify::Parent(parent)) => parent.do_send(ChildExited {
                child_id: std::mem::take(&mut self.child_id),
                generation: self.generation,
                reason,
            }),
            Some(Notify::Callback(callback)) => callback(reason),
            None => {}
        }
    }
}

thread_local! {
    /// The message of the last panic on this thread, set by the hook, taken by an `ExitGuard`.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL_HOOK: Once = Once::new();

/// Install (once per process; later calls do nothing) a panic hook that records each panic's
/// message and location for [`ExitGuard`], then calls the hook that was installed before it
/// (by default the one printing the message to stderr). Call it at start-up, before any actor
/// runs; without it a panicked child reports "unknown panic".
pub fn install_panic_hook() {
    INSTALL_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_message(info);
            // `try_with`: during thread teardown the thread-local may be gone; then there is no
            // actor left on this thread to read it anyway.
            let _ = LAST_PANIC.try_with(|slot| {
                if let Ok(mut slot) = slot.try_borrow_mut() {
                    *slot = Some(message);
                }
            });
            previous(info);
        }));
    });
}

/// The recorded message of the panic in progress on this thread, if the hook saw one.
pub(crate) fn take_panic_message() -> Option<String> {
    LAST_PANIC
        .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut slot| slot.take()))
        .ok()
        .flatten()
}

/// The text of a panic payload (`&str` or `String`, as `panic!` makes them).
pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

fn panic_message(info: &PanicHookInfo<'_>) -> String {
    let payload = payload_text(info.payload());
    let mut message = match info.location() {
        Some(location) => format!(
            "{payload} at {}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        ),
        None => payload.to_owned(),
    };
    truncate_at_char_boundary(&mut message, PANIC_MESSAGE_BYTES_MAX);
    message
}

/// `text` cut to [`PANIC_MESSAGE_BYTES_MAX`].
pub(crate) fn truncated(mut text: String) -> String {
    truncate_at_char_boundary(&mut text, PANIC_MESSAGE_BYTES_MAX);
    text
}

fn truncate_at_char_boundary(text: &mut String, bytes_max: usize) {
    if text.len() <= bytes_max {
        return;
    }
    let mut cut = bytes_max;
    while !text.is_char_boundary(cut) {
        cut -= 1; // cannot underflow: 0 is always a char boundary
    }
    text.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_and_shutdown_are_not_abnormal() {
        assert!(!ExitReason::Normal.is_abnormal());
        assert!(!ExitReason::Shutdown.is_abnormal());
        assert!(ExitReason::Panicked("x".into()).is_abnormal());
        assert!(ExitReason::Failed("x".into()).is_abnormal());
        assert!(ExitReason::Escalated("x".into()).is_abnormal());
    }

    #[test]
    fn display_prefixes_the_kind() {
        assert_eq!(
            ExitReason::Panicked("injected fault".into()).to_string(),
            "panicked: injected fault"
        );
        assert_eq!(ExitReason::Shutdown.to_string(), "shutdown");
    }

    #[test]
    fn callback_guard_reports_set_reason_then_normal() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let mut guard = ExitGuard::with_callback("root", Box::new(move |r| tx.send(r).unwrap()));
        guard.set_reason(ExitReason::Failed("boom".into()));
        drop(guard);
        drop(ExitGuard::with_callback(
            "root",
            Box::new(move |r| tx2.send(r).unwrap()),
        ));
        assert_eq!(rx.recv().unwrap(), ExitReason::Failed("boom".into()));
        assert_eq!(rx.recv().unwrap(), ExitReason::Normal);
    }

    #[test]
    fn guard_dropped_while_panicking_reports_the_hooked_message() {
        install_panic_hook();
        let (tx, rx) = std::sync::mpsc::channel();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = ExitGuard::with_callback("c", Box::new(move |r| tx.send(r).unwrap()));
            panic!("injected {}", "fault");
        }));
        assert!(result.is_err());
        match rx.recv().unwrap() {
            ExitReason::Panicked(message) => {
                assert!(message.starts_with("injected fault at "), "{message}");
                assert!(message.contains("exit.rs"), "{message}");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let mut text = "é".repeat(PANIC_MESSAGE_BYTES_MAX);
        truncate_at_char_boundary(&mut text, PANIC_MESSAGE_BYTES_MAX - 1);
        assert!(text.len() < PANIC_MESSAGE_BYTES_MAX);
        assert!(text.chars().all(|c| c == 'é'));
    }
}
