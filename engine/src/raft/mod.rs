//! The sans-IO Raft core: no runtime, no clock, no file system, no socket.
