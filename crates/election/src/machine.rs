//! The sans-IO election state machine (work in progress).
