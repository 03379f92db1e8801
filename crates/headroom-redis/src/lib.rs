//! Redis (placeholder: being written)
