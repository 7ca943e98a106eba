//! Protobuf bodies generated from `proto/missive.proto`.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/missive.v1.rs"));
