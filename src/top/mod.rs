//! `top`: a live table of every VM — CPU, memory, disk and network rates, agent and ISO.
//!
//! A collector thread ([`collector`]) runs the probe manager's scan (with the bulk
//! statistics) once per interval and sends each [`model::Sample`] over a channel, stamped
//! with its own clock; the UI thread only computes rates from consecutive samples, draws
//! ([`view`]) and handles keys ([`state`]). A frozen agent or a slow host delays samples,
//! never the screen. [`batch`] writes the same figures as CSV or JSON lines.

pub mod batch;
pub mod collector;
pub mod model;
pub mod state;
pub mod view;

#[cfg(test)]
mod tests;
