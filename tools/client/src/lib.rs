//! The reference Missive client (being written).
