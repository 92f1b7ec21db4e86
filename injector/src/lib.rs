//! palisade's mutating admission webhook: turns a pod into a JSONPatch that adds the proxy and
//! its init step. (Issue 9; not built yet.)
#![forbid(unsafe_code)]
