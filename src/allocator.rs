//! Allocator options of the long-running commands (`controller`,
//! `standalone`).
//!
//! The `switchyard` binary allocates with mimalloc. By default mimalloc
//! returns a freed page to the OS only a second after it was freed
//! (`purge_delay`), and only when it runs again after that: a controller that
//! goes idle after a full translation keeps every page the translation
//! touched and freed. It also backs its arenas with transparent huge pages,
//! so a few live objects keep 2 MiB resident. At 5,000 routes these two
//! account for about 40 MiB of a 140 MiB controller (measured in
//! `bench/notes/memory.md`).
//!
//! mimalloc reads its options from the environment once, when the process
//! starts (before `main`); changing them later takes its C API, which is
//! `unsafe` (this crate forbids it). So a long-running command re-executes
//! itself once, with the options it lacks added to its environment
//! ([`reexec_with_options`]). An option the environment already sets, to
//! any value, is left as it is: the operator's choice wins, and the
//! re-executed process finds every option set and goes on.

use std::ffi::OsString;

/// mimalloc options (environment variables) the controller runs with.
pub const OPTIONS: &[(&str, &str)] = &[
    // Return freed pages at once rather than after a second: an idle
    // controller would otherwise keep them until its next translation.
    ("MIMALLOC_PURGE_DELAY", "0"),
    // No transparent huge pages for the arenas: a 2 MiB page stays
    // resident while any object in it lives.
    ("MIMALLOC_ALLOW_THP", "0"),
];

/// The [`OPTIONS`] that `env` (a variable lookup) does not set.
pub fn missing(env: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, &'static str)> {
    OPTIONS
        .iter()
        .filter(|(name, _)| env(name).is_none())
        .copied()
        .collect()
}

/// Replaces this process with the same program and arguments, with the
/// [`OPTIONS`] its environment lacks added. Returns `Ok(())` without doing
/// anything when every option is set already; returns an error only when
/// the program could not be executed again (the caller goes on with the
/// allocator's defaults).
pub fn reexec_with_options() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;

    let add = missing(|name| std::env::var_os(name));
    if add.is_empty() {
        return Ok(());
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("switchyard"));
    // `/proc/self/exe` is this very program, even when its file was
    // replaced or removed since it started.
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .envs(add)
        .exec();
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_options_the_environment_lacks_are_added() {
        let all = missing(|_| None);
        assert_eq!(all, OPTIONS);
        let set_by_operator =
            missing(|name| (name == "MIMALLOC_PURGE_DELAY").then(|| OsString::from("250")));
        assert_eq!(set_by_operator, [("MIMALLOC_ALLOW_THP", "0")]);
        // An empty value is the operator's choice too (mimalloc reads it as 1).
        assert!(missing(|_| Some(OsString::new())).is_empty());
    }
}
