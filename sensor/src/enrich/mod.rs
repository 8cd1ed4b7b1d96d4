//! Who and where, labelled once per poll: containers and pods, executable
//! and command line, file paths, destination classes.

pub mod container;
pub mod destination;
pub mod identity;
pub mod label;
pub mod paths;
pub mod pods;
pub mod procmeta;
