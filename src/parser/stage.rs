//! Stages, ARG scoping and expansion. (Placeholder until the typed layer lands.)
