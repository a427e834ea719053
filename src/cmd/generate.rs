//! `ferry __generate DIR [--date YYYY-MM-DD]` (hidden): the man pages and shell completions, made from the same
//! clap definition that parses the command line, for scripts/package.sh.
//!
//! DIR/man/ gets ferry.8 and one page per command (ferry-create.8, ferry-snapshot-create.8,
//! ...); DIR/completions/ gets ferry.bash, _ferry (zsh) and ferry.fish.

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use std::path::Path;

pub fn generate(dir: &Path, date: &str) -> Result<u8> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let mut cli = super::Cli::command().disable_help_subcommand(true).long_version(crate::version::long_one_line());
    cli.build();
    write_man_pages(&cli, &man, date)?;
    let mut public = public_command(&super::Cli::command());
    for (shell, file) in [(Shell::Bash, "ferry.bash"), (Shell::Zsh, "_ferry"), (Shell::Fish, "ferry.fish")] {
        let path = completions.join(file);
        let mut out = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        clap_complete::generate(shell, &mut public, "ferry", &mut out);
    }
    Ok(0)
}

/// A page for `cmd` and for each of its visible subcommands, in section 8 (administration).
fn write_man_pages(cmd: &Command, dir: &Path, date: &str) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub, dir, date)?;
    }
    let page = clap_mangen::Man::new(cmd.clone()).section("8").manual("ferry manual").date(date);
    page.generate_to(dir).with_context(|| format!("write the man page of {} into {}", cmd.get_name(), dir.display()))?;
    Ok(())
}

/// The top-level command without its hidden subcommands (the ends of migrations and syncs
/// that ferry starts over ssh, this generator): clap_complete would offer them too.
fn public_command(full: &Command) -> Command {
    Command::new("ferry")
        .version(crate::version::short())
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_offer_every_visible_command_and_no_hidden_one() {
        let full = crate::cmd::Cli::command();
        let public = public_command(&full);
        for s in full.get_subcommands() {
            assert_eq!(public.find_subcommand(s.get_name()).is_some(), !s.is_hide_set(), "{}", s.get_name());
            // Only top-level commands are hidden: public_command filters that level alone.
            assert!(s.get_subcommands().all(|n| !n.is_hide_set()), "{} has a hidden subcommand", s.get_name());
        }
        assert_eq!(public.get_arguments().count(), full.get_arguments().count());
    }

    #[test]
    fn writes_a_page_per_command_and_three_completions() {
        let d = tempfile::tempdir().unwrap();
        generate(d.path(), "2026-01-02").unwrap();
        let top = std::fs::read_to_string(d.path().join("man/ferry.8")).unwrap();
        assert!(top.contains(".TH ferry 8 2026-01-02"), "{top}");
        assert!(top.contains("FERRY_DATA_DIR"), "the environment variables are named");
        assert!(top.contains("; image format: writes"), "the VERSION section names the formats: {top}");
        assert!(top.contains("migrate"), "the top page lists the commands");
        assert!(!top.contains("migrate\\-receive") && !top.contains("__generate"), "hidden commands stay out: {top}");
        for page in ["ferry-create.8", "ferry-migrate.8", "ferry-snapshot.8", "ferry-snapshot-create.8", "ferry-image-inspect.8"] {
            assert!(d.path().join("man").join(page).is_file(), "{page}");
        }
        assert!(!d.path().join("man/ferry-migrate-receive.8").exists());
        let bash = std::fs::read_to_string(d.path().join("completions/ferry.bash")).unwrap();
        assert!(bash.contains("--data-dir") && bash.contains("checkpoint"));
        assert!(!bash.contains("migrate-receive") && !bash.contains("__generate"));
        for f in ["_ferry", "ferry.fish"] {
            assert!(std::fs::read_to_string(d.path().join("completions").join(f)).unwrap().contains("snapshot"), "{f}");
        }
    }
}
