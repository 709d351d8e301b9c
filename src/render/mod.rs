//! Views of a [`crate::snapshot::Snapshot`]: they only read plain data and write to
//! `impl Write`, so each is tested against a `Vec<u8>`.

pub mod json;
pub mod table;
pub mod text;
pub mod units;
