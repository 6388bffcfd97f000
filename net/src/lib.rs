//! `ringraft-net`: the peer transport of ringraft.
