//! Running the system tools (`ip`, `nft`, `dig`, ...) and turning their failures into [`Error`]s.

use std::process::{Command, Output, Stdio};

use crate::error::{Error, ErrorKind};

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(argv: &[&str]) -> String {
    argv.join(" ")
}

/// Runs `argv` to completion with stdin closed; `Ok` whatever its exit status.
pub(crate) fn output(argv: &[&str]) -> Result<Output, Error> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::new(ErrorKind::Spawn, "", "empty command"))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Spawn, describe(argv), e.to_string()))
}

/// Runs `argv` and insists on success; returns its stdout.
pub(crate) fn run(argv: &[&str]) -> Result<String, Error> {
    let out = output(argv)?;
    check(argv, out)
}

/// Turns a finished command into its stdout, or an error carrying its stderr and status.
pub(crate) fn check(argv: &[&str], out: Output) -> Result<String, Error> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = format!("{} ({})", stderr.trim(), out.status);
    Err(Error::new(ErrorKind::Command, describe(argv), detail))
}
