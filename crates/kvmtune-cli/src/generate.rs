//! `kvmtune generate man|completions DIR` (hidden): the man pages and the bash, zsh and fish
//! completions, made from the CLI's own definition so that they cannot drift from it.
//! `scripts/package-deb.sh` ships them; anyone packaging kvmtune otherwise can run the same.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use clap_complete::Shell;

use crate::Outcome;

#[derive(Subcommand)]
pub enum GenerateCommand {
    /// Man pages, section 1: `kvmtune.1` and one per subcommand (`kvmtune-host-prepare.1`).
    Man {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
    /// Shell completions: `kvmtune.bash`, `_kvmtune` (zsh) and `kvmtune.fish`.
    Completions {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
}

pub fn run(command: GenerateCommand, mut cli: clap::Command) -> anyhow::Result<Outcome> {
    match command {
        // clap_mangen leaves out hidden subcommands (this one among them).
        GenerateCommand::Man { dir } => {
            made(&dir)?;
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("writing the man pages to {}", dir.display()))?;
        }
        GenerateCommand::Completions { dir } => {
            made(&dir)?;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cli, "kvmtune", &dir)
                    .with_context(|| format!("writing the {shell} completion to {}", dir.display()))?;
            }
        }
    }
    Ok(Outcome::Clean)
}

fn made(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))
}
