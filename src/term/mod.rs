//! The terminal side of interactive work: line-based prompts that every flow (menu,
//! edit, dismount offers) uses, and progress lines for long work. Both write only to
//! writers they are given, so every flow is testable on a `Vec<u8>`, and both escape
//! what they show.

pub mod interrupt;
pub mod progress;
pub mod prompt;
