//! Views of the plain data in [`crate::snapshot`]: they only read it and write to a
//! writer, so each is tested against a `Vec<u8>`. Untrusted text is escaped here, at
//! the output.

pub mod json;
pub mod media;
pub mod table;
pub mod text;
