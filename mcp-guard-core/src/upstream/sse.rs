//! Legacy HTTP+SSE client transport (2024-11-05).
