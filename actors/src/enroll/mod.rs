//! Enrollment: the enroller actor (queue, fair slots, timers) and the procedure of one attempt
//! (read, decide, sign or recover or follow up, write), each step in its own file.

mod attempt;
pub use attempt::EnrollContext;
pub mod enroller;
mod fair_queue;
mod follow_up;
pub mod lifecycle;
mod recover;
mod sign;
mod track;
