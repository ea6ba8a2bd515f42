//! Integration tests: each mounts the real binary on a temp store and
//! drives it through ordinary file I/O and real tools.

mod common;

mod mount {
    mod basics;
}
