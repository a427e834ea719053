//! ferry's image format: one file or stream holding a container's CRIU images, its config and
//! optionally its file tree; versioned, compressed per section, checksummed. No I/O policy:
//! callers give readers and writers.
