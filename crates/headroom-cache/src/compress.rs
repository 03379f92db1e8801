//! Compression (placeholder: being written)
