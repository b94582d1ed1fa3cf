//! One module per command group; each maps arguments to one RPC and the
//! answer to a view that renders as json or a table.

pub mod admin_token;
pub mod arc;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod erasure;
pub mod export;
pub mod import;
pub mod key;
pub mod keygen;
pub mod master_key;
pub mod mcp;
pub mod org;
pub mod token;
