//! Build context: ignore-file choice, the walk, and COPY/ADD source selection.
