//! The crate's errors: a spec that cannot be supervised, or a bound reached.

/// Why a supervisor (or a dynamic child) could not be started or registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisionError {
    /// `SimpleOneForOne` belongs to [`crate::DynamicChildren`], not to a [`crate::Supervisor`].
    #[error("supervisor {supervisor}: strategy simple_one_for_one needs DynamicChildren")]
    DynamicStrategy { supervisor: String },
    /// Names are path segments: non-empty, without `/`.
    #[error("invalid name {name:?}: names are non-empty and contain no '/'")]
    InvalidName { name: String },
    #[error("supervisor {supervisor}: two children are named {child}")]
    DuplicateChild { supervisor: String, child: String },
    #[error("supervisor {supervisor}: {count} children, more than the {max} allowed")]
    TooManyChildren {
        supervisor: String,
        count: usize,
        max: usize,
    },
    /// A dynamic supervisor already holds its maximum number of live children.
    #[error("dynamic supervisor full: {max} live children")]
    DynamicFull { max: usize },
    /// A dynamic supervisor gave up; it takes no more children.
    #[error("dynamic supervisor gave up; it takes no more children")]
    GaveUp,
    /// [`crate::EXIT_WATCHERS_MAX`] watchers already wait for this supervisor's exit.
    #[error("{max} watchers already wait for this supervisor's exit")]
    TooManyWatchers { max: usize },
    /// The supervisor stopped before answering (or died without a reason: it panicked).
    #[error("supervisor is gone")]
    Gone,
}

/// Names become path segments (`root/orders/shard-0`).
pub(crate) fn check_name(name: &str) -> Result<(), SupervisionError> {
    if name.is_empty() || name.contains('/') {
        return Err(SupervisionError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}
