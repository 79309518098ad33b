//! Middleware for stackway.
