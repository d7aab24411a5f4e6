//! Test support lives in the test files.
