//! Route-level cache tests on a manual clock (being written).
