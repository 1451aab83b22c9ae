//! Serving a verified tree over HTTP/1.1, so machines can PXE-boot from it (iPXE fetches
//! kernels, initrds and scripts over HTTP) and installers can download disk images.
//!
//! The protocol side, as pure functions over bytes, lives in [`http`].

pub mod http;
