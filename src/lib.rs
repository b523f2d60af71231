//! sqlbak: consistent, compressed snapshots of live SQLite databases.
//!
//! Data flows one way: [`capture`] → [`codec`] → [`storage`] on the way out, and
//! [`storage`] → [`codec`] → [`image`] on the way back. [`catalog`], [`timespec`] and
//! [`config`] are pure logic; [`commands`] only orchestrates.
#![forbid(unsafe_code)]

pub mod capture;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod encryption;
pub mod exit;
pub mod hooks;
pub mod host;
pub mod image;
pub mod lock;
pub mod metrics;
pub mod output;
pub mod ping;
pub mod retention;
pub mod schedule;
pub mod storage;
pub mod timespec;
pub mod ui;
