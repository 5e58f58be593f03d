//! Properties of the pure parsers.
