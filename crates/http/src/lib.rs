//! HTTP API (work in progress).
