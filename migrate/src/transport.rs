//! Transports (placeholder).
