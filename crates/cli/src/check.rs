//! `ferry check`: named checks, one ✓/× line each, non-zero exit on any failure.

use clap::Args;

/// Flags of `ferry check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {}

/// Runs `ferry check`.
pub fn run(_args: &CheckArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented")
}
