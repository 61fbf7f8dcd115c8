//! Command-line parsing: vssadmin command lines into a typed [`Command`].
//!
//! Syntax accepted:
//! - verbs and objects are case-insensitive: `list shadows`, `LIST Shadows`;
//! - switches in the Windows form `/key=value` and `/flag`, or the GNU forms
//!   `--key=value`, `--key value` and `--flag`; switch names are
//!   case-insensitive and `-`/`_` inside them are ignored
//!   (`/AllowUsers` = `--allow-users`); values are kept as written;
//! - `--json` (or `/json`) anywhere asks for JSON output;
//! - `help`, `/?`, `-?`, `-h` or `--help` anywhere asks for help (about the
//!   command, when one is named). An empty command line is also help.

use std::collections::BTreeMap;
use std::fmt;

use vss_types::{Guid, VssError};

/// The `/maxsize=` spec; it lives in vss-types so vssd checks the same
/// syntax.
pub use vss_types::storage::{MaxSize, MIN_MAX_SIZE};

/// A parsed command line: what to do, and whether to print JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--json` was given: print JSON instead of the Windows layout.
    pub json: bool,
}

/// One vssadmin command with its validated arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the command list, or the syntax of one command.
    Help {
        topic: Option<CommandKind>,
    },
    ListWriters,
    ListProviders,
    ListShadows(ShadowQuery),
    ListVolumes,
    ListShadowStorage(StorageFilter),
    CreateShadow {
        for_volume: String,
        /// Keep retrying for up to this many minutes while another
        /// creation is in progress.
        autoretry_minutes: Option<u32>,
    },
    DeleteShadows {
        target: DeleteTarget,
        /// Do not ask for confirmation.
        quiet: bool,
    },
    ExposeShadow {
        shadow: Guid,
        to: String,
        allow_users: bool,
    },
    UnexposeShadow {
        shadow: Guid,
    },
    AddShadowStorage {
        for_volume: String,
        on_volume: String,
        /// `None`: no limit.
        max_size: Option<MaxSize>,
    },
    ResizeShadowStorage {
        for_volume: String,
        on_volume: String,
        max_size: Option<MaxSize>,
    },
    DeleteShadowStorage {
        for_volume: String,
        on_volume: Option<String>,
        quiet: bool,
    },
    RevertShadow {
        shadow: Guid,
        force_dismount: bool,
    },
    QueryReverts {
        for_volume: Option<String>,
    },
    /// Linux: have the copy-on-write provider serve a block device.
    AddVolume {
        device: String,
        mount: String,
    },
    /// Linux: give a software volume back.
    DeleteVolume {
        for_volume: String,
        quiet: bool,
    },
}

impl Command {
    /// Which command this is; `None` for help.
    pub fn kind(&self) -> Option<CommandKind> {
        Some(match self {
            Command::Help { .. } => return None,
            Command::ListWriters => CommandKind::ListWriters,
            Command::ListProviders => CommandKind::ListProviders,
            Command::ListShadows(_) => CommandKind::ListShadows,
            Command::ListVolumes => CommandKind::ListVolumes,
            Command::ListShadowStorage(_) => CommandKind::ListShadowStorage,
            Command::CreateShadow { .. } => CommandKind::CreateShadow,
            Command::DeleteShadows { .. } => CommandKind::DeleteShadows,
            Command::ExposeShadow { .. } => CommandKind::ExposeShadow,
            Command::UnexposeShadow { .. } => CommandKind::UnexposeShadow,
            Command::AddShadowStorage { .. } => CommandKind::AddShadowStorage,
            Command::ResizeShadowStorage { .. } => CommandKind::ResizeShadowStorage,
            Command::DeleteShadowStorage { .. } => CommandKind::DeleteShadowStorage,
            Command::RevertShadow { .. } => CommandKind::RevertShadow,
            Command::QueryReverts { .. } => CommandKind::QueryReverts,
            Command::AddVolume { .. } => CommandKind::AddVolume,
            Command::DeleteVolume { .. } => CommandKind::DeleteVolume,
        })
    }
}

/// Filter of `list shadows`; all parts optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowQuery {
    pub for_volume: Option<String>,
    pub shadow: Option<Guid>,
    pub set: Option<Guid>,
}

impl ShadowQuery {
    /// The `a{ss}` filter of `org.vss.Requestor1.ListShadows`.
    pub fn to_filter(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        if let Some(v) = &self.for_volume {
            f.insert("for".into(), v.clone());
        }
        if let Some(id) = self.shadow {
            f.insert("shadow".into(), id.to_string());
        }
        if let Some(id) = self.set {
            f.insert("set".into(), id.to_string());
        }
        f
    }
}

/// Which shadow copies `delete shadows` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteTarget {
    /// `/for=V /oldest`: the oldest shadow copy of V.
    Oldest { for_volume: String },
    /// `/for=V /all`: every shadow copy of V.
    All { for_volume: String },
    /// `/shadow=ID`, optionally checked against `/for=V`.
    Shadow {
        id: Guid,
        for_volume: Option<String>,
    },
}

impl DeleteTarget {
    /// The `a{ss}` filter of `org.vss.Requestor1.DeleteShadows`.
    pub fn to_filter(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        match self {
            DeleteTarget::Oldest { for_volume } => {
                f.insert("for".into(), for_volume.clone());
                f.insert("oldest".into(), "true".into());
            }
            DeleteTarget::All { for_volume } => {
                f.insert("for".into(), for_volume.clone());
                f.insert("all".into(), "true".into());
            }
            DeleteTarget::Shadow { id, for_volume } => {
                f.insert("shadow".into(), id.to_string());
                if let Some(v) = for_volume {
                    f.insert("for".into(), v.clone());
                }
            }
        }
        f
    }
}

/// Filter of `list shadowstorage`: `/for=` and `/on=` are mutually exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageFilter {
    All,
    For(String),
    On(String),
}

/// The commands, without their arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    ListWriters,
    ListProviders,
    ListShadows,
    ListVolumes,
    ListShadowStorage,
    CreateShadow,
    DeleteShadows,
    ExposeShadow,
    UnexposeShadow,
    AddShadowStorage,
    ResizeShadowStorage,
    DeleteShadowStorage,
    RevertShadow,
    QueryReverts,
    AddVolume,
    DeleteVolume,
}

impl CommandKind {
    /// Every command, in the order help lists them.
    pub const ALL: [CommandKind; 16] = [
        CommandKind::ListWriters,
        CommandKind::ListProviders,
        CommandKind::ListShadows,
        CommandKind::ListVolumes,
        CommandKind::ListShadowStorage,
        CommandKind::CreateShadow,
        CommandKind::DeleteShadows,
        CommandKind::ExposeShadow,
        CommandKind::UnexposeShadow,
        CommandKind::AddShadowStorage,
        CommandKind::ResizeShadowStorage,
        CommandKind::DeleteShadowStorage,
        CommandKind::RevertShadow,
        CommandKind::QueryReverts,
        CommandKind::AddVolume,
        CommandKind::DeleteVolume,
    ];

    /// Commands of vss for Linux that Windows' vssadmin does not have.
    pub fn is_linux_extension(self) -> bool {
        matches!(self, CommandKind::AddVolume | CommandKind::DeleteVolume)
    }

    /// Verb and object, lower case: `create shadow`.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::ListWriters => "list writers",
            CommandKind::ListProviders => "list providers",
            CommandKind::ListShadows => "list shadows",
            CommandKind::ListVolumes => "list volumes",
            CommandKind::ListShadowStorage => "list shadowstorage",
            CommandKind::CreateShadow => "create shadow",
            CommandKind::DeleteShadows => "delete shadows",
            CommandKind::ExposeShadow => "expose shadow",
            CommandKind::UnexposeShadow => "unexpose shadow",
            CommandKind::AddShadowStorage => "add shadowstorage",
            CommandKind::ResizeShadowStorage => "resize shadowstorage",
            CommandKind::DeleteShadowStorage => "delete shadowstorage",
            CommandKind::RevertShadow => "revert shadow",
            CommandKind::QueryReverts => "query reverts",
            CommandKind::AddVolume => "add volume",
            CommandKind::DeleteVolume => "delete volume",
        }
    }

    /// Full syntax, e.g. `vssadmin create shadow /for=PATH [/autoretry=MINUTES]`.
    pub fn syntax(self) -> &'static str {
        match self {
            CommandKind::ListWriters => "vssadmin list writers",
            CommandKind::ListProviders => "vssadmin list providers",
            CommandKind::ListShadows => {
                "vssadmin list shadows [/for=PATH] [/shadow=ID] [/set=ID]"
            }
            CommandKind::ListVolumes => "vssadmin list volumes",
            CommandKind::ListShadowStorage => "vssadmin list shadowstorage [/for=PATH | /on=PATH]",
            CommandKind::CreateShadow => "vssadmin create shadow /for=PATH [/autoretry=MINUTES]",
            CommandKind::DeleteShadows => {
                "vssadmin delete shadows /for=PATH /oldest | /for=PATH /all | [/for=PATH] /shadow=ID [/quiet]"
            }
            CommandKind::ExposeShadow => "vssadmin expose shadow /shadow=ID /to=DIR [/allowusers]",
            CommandKind::UnexposeShadow => "vssadmin unexpose shadow /shadow=ID",
            CommandKind::AddShadowStorage => {
                "vssadmin add shadowstorage /for=PATH /on=PATH [/maxsize=SIZE]"
            }
            CommandKind::ResizeShadowStorage => {
                "vssadmin resize shadowstorage /for=PATH /on=PATH [/maxsize=SIZE]"
            }
            CommandKind::DeleteShadowStorage => {
                "vssadmin delete shadowstorage /for=PATH [/on=PATH] [/quiet]"
            }
            CommandKind::RevertShadow => "vssadmin revert shadow /shadow=ID [/forcedismount]",
            CommandKind::QueryReverts => "vssadmin query reverts [/for=PATH]",
            CommandKind::AddVolume => "vssadmin add volume /device=PATH /mount=DIR",
            CommandKind::DeleteVolume => "vssadmin delete volume /for=DIR [/quiet]",
        }
    }

    /// One line saying what the command does.
    pub fn summary(self) -> &'static str {
        match self {
            CommandKind::ListWriters => "Show the registered writers and their states",
            CommandKind::ListProviders => "Show the registered shadow copy providers",
            CommandKind::ListShadows => "Show shadow copies, grouped by shadow copy set",
            CommandKind::ListVolumes => "Show the volumes shadow copies can be made of",
            CommandKind::ListShadowStorage => "Show shadow storage associations",
            CommandKind::CreateShadow => "Make a shadow copy of a volume",
            CommandKind::DeleteShadows => "Delete shadow copies",
            CommandKind::ExposeShadow => "Mount a shadow copy read-only at a directory",
            CommandKind::UnexposeShadow => "Unmount an exposed shadow copy",
            CommandKind::AddShadowStorage => "Add a shadow storage association",
            CommandKind::ResizeShadowStorage => {
                "Change the maximum size of a shadow storage association"
            }
            CommandKind::DeleteShadowStorage => "Delete shadow storage associations",
            CommandKind::RevertShadow => "Revert a volume to a shadow copy",
            CommandKind::QueryReverts => "Show the progress of running reverts",
            CommandKind::AddVolume => "Serve a block device with the copy-on-write provider",
            CommandKind::DeleteVolume => "Stop serving a volume with the copy-on-write provider",
        }
    }

    fn from_words(verb: &str, object: &str) -> Option<CommandKind> {
        let name = format!(
            "{} {}",
            verb.to_ascii_lowercase(),
            object.to_ascii_lowercase()
        );
        CommandKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn switches(self) -> &'static [Key] {
        use Key::*;
        match self {
            CommandKind::ListWriters | CommandKind::ListProviders | CommandKind::ListVolumes => &[],
            CommandKind::ListShadows => &[For, Shadow, Set],
            CommandKind::ListShadowStorage => &[For, On],
            CommandKind::CreateShadow => &[For, AutoRetry],
            CommandKind::DeleteShadows => &[For, Oldest, All, Shadow, Quiet],
            CommandKind::ExposeShadow => &[Shadow, To, AllowUsers],
            CommandKind::UnexposeShadow => &[Shadow],
            CommandKind::AddShadowStorage | CommandKind::ResizeShadowStorage => &[For, On, MaxSize],
            CommandKind::DeleteShadowStorage => &[For, On, Quiet],
            CommandKind::RevertShadow => &[Shadow, ForceDismount],
            CommandKind::QueryReverts => &[For],
            CommandKind::AddVolume => &[Device, Mount],
            CommandKind::DeleteVolume => &[For, Quiet],
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The hint of an unknown command: the supported commands.
pub fn supported_commands_hint() -> String {
    let names: Vec<&str> = CommandKind::ALL.iter().map(|k| k.name()).collect();
    format!(
        "Supported commands: {}; `vssadmin --help` shows their syntax.",
        names.join(", ")
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    For,
    On,
    Shadow,
    Set,
    Oldest,
    All,
    Quiet,
    To,
    AllowUsers,
    AutoRetry,
    MaxSize,
    ForceDismount,
    Device,
    Mount,
}

impl Key {
    const ALL: [Key; 14] = [
        Key::For,
        Key::On,
        Key::Shadow,
        Key::Set,
        Key::Oldest,
        Key::All,
        Key::Quiet,
        Key::To,
        Key::AllowUsers,
        Key::AutoRetry,
        Key::MaxSize,
        Key::ForceDismount,
        Key::Device,
        Key::Mount,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::For => "for",
            Key::On => "on",
            Key::Shadow => "shadow",
            Key::Set => "set",
            Key::Oldest => "oldest",
            Key::All => "all",
            Key::Quiet => "quiet",
            Key::To => "to",
            Key::AllowUsers => "allowusers",
            Key::AutoRetry => "autoretry",
            Key::MaxSize => "maxsize",
            Key::ForceDismount => "forcedismount",
            Key::Device => "device",
            Key::Mount => "mount",
        }
    }

    fn takes_value(self) -> bool {
        matches!(
            self,
            Key::For
                | Key::On
                | Key::Shadow
                | Key::Set
                | Key::To
                | Key::AutoRetry
                | Key::MaxSize
                | Key::Device
                | Key::Mount
        )
    }

    /// Windows spelling for messages: `/for=` or `/quiet`.
    fn shown(self) -> String {
        if self.takes_value() {
            format!("/{}=", self.name())
        } else {
            format!("/{}", self.name())
        }
    }

    fn lookup(raw: &str) -> Option<Key> {
        let norm: String = raw
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Key::ALL.into_iter().find(|k| k.name() == norm)
    }
}

/// A token of the command line before the command is known.
enum Token {
    Word(String),
    Switch {
        /// As typed, without any value: `/For`, `--max-size`.
        shown: String,
        key: Option<Key>,
        value: Option<String>,
    },
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Invocation, VssError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut json = false;
    let mut help = false;
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let lower = arg.to_ascii_lowercase();
        if lower == "--json" || lower == "/json" {
            json = true;
        } else if ["/?", "-?", "-h", "--help", "/help"].contains(&lower.as_str()) {
            help = true;
        } else if let Some(body) = arg.strip_prefix("--") {
            let (name, mut value) = split_value(body);
            let key = Key::lookup(name);
            // `--key value`: the value is the next argument.
            if value.is_none() && key.is_some_and(Key::takes_value) {
                if let Some(next) = args.get(i).filter(|n| !n.starts_with("--")) {
                    value = Some(next.clone());
                    i += 1;
                }
            }
            tokens.push(Token::Switch {
                shown: format!("--{name}"),
                key,
                value,
            });
        } else if let Some(body) = arg.strip_prefix('/').or_else(|| arg.strip_prefix('-')) {
            let (name, value) = split_value(body);
            let prefix = &arg[..1];
            tokens.push(Token::Switch {
                shown: format!("{prefix}{name}"),
                key: Key::lookup(name),
                value,
            });
        } else {
            tokens.push(Token::Word(arg.clone()));
        }
    }

    let words: Vec<&str> = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.as_str()),
            Token::Switch { .. } => None,
        })
        .collect();

    // Help wins over everything else.
    let words_help = words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("help"));
    if help || words_help || tokens.is_empty() {
        let rest = if words_help { &words[1..] } else { &words[..] };
        let topic = match rest {
            [verb, object, ..] => CommandKind::from_words(verb, object),
            _ => None,
        };
        return Ok(Invocation {
            command: Command::Help { topic },
            json,
        });
    }

    let kind = match words.as_slice() {
        [verb, object, ..] => CommandKind::from_words(verb, object),
        _ => None,
    }
    .ok_or_else(|| {
        VssError::invalid_arg("Invalid command.").with_hint(supported_commands_hint())
    })?;
    let fail =
        |msg: String| VssError::invalid_arg(msg).with_hint(format!("Usage: {}", kind.syntax()));

    if let Some(extra) = words.get(2) {
        return Err(fail(format!("unexpected argument '{extra}' for `{kind}`")));
    }

    let mut sw = Switches::default();
    for t in &tokens {
        let Token::Switch { shown, key, value } = t else {
            continue;
        };
        let Some(key) = *key else {
            return Err(fail(format!("unknown switch {shown}")));
        };
        if !kind.switches().contains(&key) {
            return Err(fail(format!("switch {shown} does not apply to `{kind}`")));
        }
        if sw.get(key).is_some() {
            return Err(fail(format!("switch {} given more than once", key.shown())));
        }
        let value = match (key.takes_value(), value) {
            (true, Some(v)) if !v.is_empty() => v.clone(),
            (true, _) => {
                return Err(fail(format!(
                    "{shown} needs a value: {}{}",
                    key.shown(),
                    value_name(key)
                )))
            }
            (false, None) => String::new(),
            (false, Some(_)) => return Err(fail(format!("{shown} takes no value"))),
        };
        sw.values.push((key, value));
    }

    let required = |key: Key| -> Result<String, VssError> {
        sw.get(key)
            .map(str::to_owned)
            .ok_or_else(|| fail(format!("{} is required for `{kind}`", key.shown())))
    };
    let opt = |key: Key| sw.get(key).map(str::to_owned);
    let flag = |key: Key| sw.get(key).is_some();
    let id = |key: Key| -> Result<Option<Guid>, VssError> {
        sw.get(key)
            .map(|v| {
                Guid::parse(v).map_err(|_| {
                    fail(format!(
                        "invalid id '{v}' for {}: expected {{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}}, \
                         as `vssadmin list shadows` shows",
                        key.shown()
                    ))
                })
            })
            .transpose()
    };
    let required_id = |key: Key| -> Result<Guid, VssError> {
        id(key)?.ok_or_else(|| fail(format!("{} is required for `{kind}`", key.shown())))
    };
    let max_size = || -> Result<Option<MaxSize>, VssError> {
        sw.get(Key::MaxSize)
            .map(|v| {
                MaxSize::parse(v).map_err(|e| {
                    fail(e.message).with_hint(format!(
                        "Sizes look like 500MB, 10GB, 1.5T, 20% or UNBOUNDED. Usage: {}",
                        kind.syntax()
                    ))
                })
            })
            .transpose()
    };

    let command = match kind {
        CommandKind::ListWriters => Command::ListWriters,
        CommandKind::ListProviders => Command::ListProviders,
        CommandKind::ListVolumes => Command::ListVolumes,
        CommandKind::ListShadows => Command::ListShadows(ShadowQuery {
            for_volume: opt(Key::For),
            shadow: id(Key::Shadow)?,
            set: id(Key::Set)?,
        }),
        CommandKind::ListShadowStorage => match (opt(Key::For), opt(Key::On)) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "/for= and /on= are mutually exclusive for `list shadowstorage`".into(),
                ))
            }
            (Some(f), None) => Command::ListShadowStorage(StorageFilter::For(f)),
            (None, Some(o)) => Command::ListShadowStorage(StorageFilter::On(o)),
            (None, None) => Command::ListShadowStorage(StorageFilter::All),
        },
        CommandKind::CreateShadow => {
            let for_volume = required(Key::For)?;
            let autoretry_minutes = opt(Key::AutoRetry)
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        fail(format!(
                            "invalid /autoretry= value '{v}': expected a whole number of minutes"
                        ))
                    })
                })
                .transpose()?;
            Command::CreateShadow {
                for_volume,
                autoretry_minutes,
            }
        }
        CommandKind::DeleteShadows => {
            let chosen = [Key::Oldest, Key::All, Key::Shadow]
                .into_iter()
                .filter(|k| flag(*k))
                .count();
            if chosen > 1 {
                return Err(fail(
                    "/oldest, /all and /shadow are mutually exclusive".into(),
                ));
            }
            let for_volume = opt(Key::For);
            let target = if let Some(id) = id(Key::Shadow)? {
                DeleteTarget::Shadow { id, for_volume }
            } else {
                let for_volume = required(Key::For)?;
                if flag(Key::Oldest) {
                    DeleteTarget::Oldest { for_volume }
                } else if flag(Key::All) {
                    DeleteTarget::All { for_volume }
                } else {
                    return Err(fail(format!(
                        "one of /oldest, /all or /shadow= is required for `{kind}`"
                    )));
                }
            };
            Command::DeleteShadows {
                target,
                quiet: flag(Key::Quiet),
            }
        }
        CommandKind::ExposeShadow => Command::ExposeShadow {
            shadow: required_id(Key::Shadow)?,
            to: required(Key::To)?,
            allow_users: flag(Key::AllowUsers),
        },
        CommandKind::UnexposeShadow => Command::UnexposeShadow {
            shadow: required_id(Key::Shadow)?,
        },
        CommandKind::AddShadowStorage => Command::AddShadowStorage {
            for_volume: required(Key::For)?,
            on_volume: required(Key::On)?,
            max_size: max_size()?,
        },
        CommandKind::ResizeShadowStorage => Command::ResizeShadowStorage {
            for_volume: required(Key::For)?,
            on_volume: required(Key::On)?,
            max_size: max_size()?,
        },
        CommandKind::DeleteShadowStorage => Command::DeleteShadowStorage {
            for_volume: required(Key::For)?,
            on_volume: opt(Key::On),
            quiet: flag(Key::Quiet),
        },
        CommandKind::RevertShadow => Command::RevertShadow {
            shadow: required_id(Key::Shadow)?,
            force_dismount: flag(Key::ForceDismount),
        },
        CommandKind::QueryReverts => Command::QueryReverts {
            for_volume: opt(Key::For),
        },
        CommandKind::AddVolume => Command::AddVolume {
            device: required(Key::Device)?,
            mount: required(Key::Mount)?,
        },
        CommandKind::DeleteVolume => Command::DeleteVolume {
            for_volume: required(Key::For)?,
            quiet: flag(Key::Quiet),
        },
    };
    Ok(Invocation { command, json })
}

fn split_value(body: &str) -> (&str, Option<String>) {
    match body.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (body, None),
    }
}

fn value_name(key: Key) -> &'static str {
    match key {
        Key::For | Key::On | Key::Device => "PATH",
        Key::Shadow | Key::Set => "ID",
        Key::To | Key::Mount => "DIR",
        Key::AutoRetry => "MINUTES",
        Key::MaxSize => "SIZE",
        _ => "",
    }
}

#[derive(Default)]
struct Switches {
    values: Vec<(Key, String)>,
}

impl Switches {
    fn get(&self, key: Key) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests;
