//! Two pods in network namespaces, joined by a veth pair: transparent mutual TLS between them.
