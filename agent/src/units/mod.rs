//! Units written the way people write them (durations, byte sizes): a leaf, so that the
//! config and the rules' expressions parse them alike without depending on each other.
mod bytes;
mod duration;

pub use bytes::ByteSize;
pub use duration::{HumanDuration, CEILING};
