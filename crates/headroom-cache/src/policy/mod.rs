//! RFC 9111 policy (placeholder: being written)
