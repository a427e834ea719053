//! File sync (placeholder while being written).
