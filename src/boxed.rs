//! Values put in a box where they are made.
//!
//! `Box::new(value)` and `Box::pin(value)` build `value` on the stack and then copy it, every
//! byte of it, into the allocation: for a request's future, a kilobyte or more per request.
//! [`boxed!`] and [`pinned!`] allocate first and build the value after, so that the compiler
//! can write it straight into the box.

/// `Box::new($value)`, with the box allocated before `$value` is built.
macro_rules! boxed {
    // Bound before it is returned: the box's type comes from the value, not from where it
    // goes (a `Box<dyn Trait>` would leave it unknown).
    ($value:expr) => {{
        let boxed = ::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $value);
        boxed
    }};
}

/// `Box::pin($value)`, with the box allocated before `$value` is built.
macro_rules! pinned {
    ($value:expr) => {{
        let boxed = $crate::boxed::boxed!($value);
        ::std::boxed::Box::into_pin(boxed)
    }};
}

pub(crate) use {boxed, pinned};

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::Pin};

    #[tokio::test]
    async fn a_future_pinned_in_place_runs_as_one_pinned_by_value() {
        let data = [7u8; 4096];
        let pinned: Pin<Box<dyn Future<Output = usize> + Send>> =
            pinned!(async move { data.iter().map(|b| usize::from(*b)).sum() });
        assert_eq!(pinned.await, 7 * 4096);
    }

    #[test]
    fn a_value_boxed_in_place_is_the_value() {
        let boxed: Box<[u64; 512]> = boxed!(std::array::from_fn(|i| i as u64 * 3));
        assert_eq!(boxed.len(), 512);
        assert!(boxed.iter().enumerate().all(|(i, v)| *v == i as u64 * 3));
    }
}
