//! Integration tests: each mounts the real binary on a temp store and
//! drives it through ordinary file I/O and real tools.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod mount {
    mod basics;
    mod crash;
    mod history;
    mod observe;
    mod posix;
    mod power_loss;
    mod retention;
    mod storage;
    mod tools;
}
