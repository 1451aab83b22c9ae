//! Fetching: the one place where kiln touches the network.
//!
//! Every external input of a build is pinned by sha256, so fetching is not "download a
//! URL" but "make the store hold the blob with this digest". An artifact that is already
//! in the store is never fetched again, and bytes only become a blob once they hash to the
//! pin; a wrong or truncated download leaves nothing behind in `blobs/`.
//!
//! Downloads are resumable. Air-gapped sites are often prepared from a laptop on a slow or
//! flaky link, and the artifacts are large (NVIDIA driver packages, image layers of
//! several GB). Zarf, Hauler and Kubespray's download role start an interrupted download
//! again from byte 0; kiln keeps the partial file in the store, keyed by the digest it must
//! end up with, and continues it with an HTTP `Range` request: in the same run after a
//! dropped connection or a stall, and in the next run after kiln was stopped.
//!
//! - [`http`]: one artifact by URL into the store, retried with backoff, resumed, verified;
//!   small documents (chart indexes, manifests) into memory; and the first, unpinned
//!   download of a file that `kiln lock` is about to pin.
//! - [`oci`]: the OCI distribution API: image tags to digests, and pulls into the store.
//! - [`debian`]: the base OS resolved to exact .debs with mmdebstrap; the host's apt sources.
//! - [`artifacts`]: what `kiln lock` resolves and what `kiln fetch` downloads, in parallel.

pub mod http;
pub mod oci;

pub mod artifacts;
pub mod debian;
