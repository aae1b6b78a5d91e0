//! The controller's tests, beside it as tokio keeps its semaphore's: `steps` drives its
//! decisions one at a time on a manual memory source; `model` checks its invariants on random
//! sequences of arrivals, cancellations, completions and readings, and under threads racing.

mod model;
mod steps;
