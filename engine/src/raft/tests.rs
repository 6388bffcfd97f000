//! Unit tests of the node's rules.
