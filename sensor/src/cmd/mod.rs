//! The commands: `sensor run` (the run loop and its poll pipeline, the
//! audit trail), `sensor tail` standalone, `sensor check`.

pub mod check;
pub mod ledger;
pub mod pipeline;
pub mod run;
pub mod runner;
pub mod tail;
pub mod trail;
