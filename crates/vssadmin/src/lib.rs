//! The library half of `vssadmin`, the administration tool of the shadow
//! copy service: [`args`] parses command lines in the Windows syntax (and
//! GNU-style switches) into a typed [`Command`]; [`render`] turns the
//! service's answers into exactly the text vssadmin prints, in the Windows
//! layout, or into JSON for `--json`. Nothing here does I/O: the binary
//! talks to vssd over D-Bus and prints what these functions return.
//!
//! # Commands
//!
//! `list writers`, `list providers`, `list shadows [/for=PATH] [/shadow=ID]
//! [/set=ID]`, `list volumes`, `list shadowstorage [/for=PATH | /on=PATH]`,
//! `create shadow /for=PATH [/autoretry=MINUTES]`, `delete shadows`,
//! `expose shadow /shadow=ID /to=DIR [/allowusers]`, `unexpose shadow
//! /shadow=ID`, `add|resize shadowstorage /for=PATH /on=PATH
//! [/maxsize=SIZE]`, `delete shadowstorage /for=PATH [/on=PATH] [/quiet]`,
//! `revert shadow /shadow=ID [/forcedismount]`, `query reverts [/for=PATH]`
//! and `help`; and two Linux extensions for the copy-on-write provider,
//! `add volume /device=PATH /mount=DIR` and `delete volume /for=DIR
//! [/quiet]`. See [`CommandKind::syntax`].
//!
//! The shadow storage verbs, `revert shadow`, `query reverts` and the
//! volume verbs go to vssd's `org.vss.Storage1` interface; without the
//! copy-on-write provider vssd answers `0x8004232F VSS_E_NOT_SUPPORTED`
//! for changes and lists nothing.
//!
//! `delete shadows` takes exactly one of `/for=PATH /oldest`, `/for=PATH
//! /all` or `/shadow=ID` (with an optional `/for=PATH` that must match).
//! Unlike Windows, `/all` needs `/for=`: deleting every shadow copy of every
//! volume must name the volumes one by one. A bare `/for=PATH` is refused
//! too, so that deleting all copies of a volume is always spelled `/all`.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the service reported a VSS error |
//! | 2 | bad arguments or invalid command |
//! | 3 | the service cannot be reached |
//! | 4 | access denied |
//!
//! See [`exit`].

pub mod args;
pub mod render;

pub use args::{
    parse, Command, CommandKind, DeleteTarget, Invocation, MaxSize, ShadowQuery, StorageFilter,
};
pub use render::ShadowStorageInfo;

/// Process exit codes of vssadmin.
pub mod exit {
    use vss_types::{VssCode, VssError};

    pub const SUCCESS: i32 = 0;
    /// The service answered with a VSS error.
    pub const VSS_ERROR: i32 = 1;
    /// Bad arguments or an invalid command (`E_INVALIDARG`).
    pub const BAD_ARGS: i32 = 2;
    /// The service (vssd on the system bus) cannot be reached.
    pub const NO_SERVICE: i32 = 3;
    /// The caller may not do this (`E_ACCESSDENIED`).
    pub const ACCESS_DENIED: i32 = 4;

    /// The exit code for an error: [`BAD_ARGS`] for `E_INVALIDARG`,
    /// [`ACCESS_DENIED`] for `E_ACCESSDENIED`, else [`VSS_ERROR`]. Failing
    /// to reach the service is the caller's to map to [`NO_SERVICE`].
    pub fn for_error(e: &VssError) -> i32 {
        match e.code {
            VssCode::InvalidArg => BAD_ARGS,
            VssCode::AccessDenied => ACCESS_DENIED,
            _ => VSS_ERROR,
        }
    }
}
