//! Typed instructions. (Placeholder until the typed layer lands.)
