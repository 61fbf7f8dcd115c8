use super::*;
use vss_types::VssCode;

const ID: &str = "{c5b5a1d4-4b3c-4a7e-9d2f-0123456789ab}";
const ID2: &str = "0b5e7d1c-1111-2222-3333-444455556666";

fn id() -> Guid {
    Guid::parse(ID).unwrap()
}

fn id2() -> Guid {
    Guid::parse(ID2).unwrap()
}

fn cmd(line: &str) -> Command {
    let inv = parse(line.split_whitespace()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
    assert!(!inv.json, "{line}");
    inv.command
}

fn err(line: &str) -> VssError {
    let e = parse(line.split_whitespace()).expect_err(line);
    assert_eq!(e.code, VssCode::InvalidArg, "{line}");
    e
}

/// The message, and that the hint shows the command's syntax.
fn err_in(line: &str, kind: CommandKind) -> String {
    let e = err(line);
    assert_eq!(
        e.hint(),
        format!("Usage: {}", kind.syntax()),
        "hint of {line}"
    );
    e.message
}

#[test]
fn simple_lists() {
    assert_eq!(cmd("list writers"), Command::ListWriters);
    assert_eq!(cmd("LIST Writers"), Command::ListWriters);
    assert_eq!(cmd("list providers"), Command::ListProviders);
    assert_eq!(cmd("List Volumes"), Command::ListVolumes);
}

#[test]
fn json_anywhere() {
    for line in [
        "--json list writers",
        "list --json writers",
        "list writers --JSON",
        "list writers /json",
    ] {
        let inv = parse(line.split_whitespace()).unwrap();
        assert!(inv.json, "{line}");
        assert_eq!(inv.command, Command::ListWriters);
    }
}

#[test]
fn list_shadows_both_syntaxes() {
    assert_eq!(
        cmd("list shadows"),
        Command::ListShadows(ShadowQuery::default())
    );
    let want = Command::ListShadows(ShadowQuery {
        for_volume: Some("/mnt/data".into()),
        shadow: Some(id()),
        set: Some(id2()),
    });
    assert_eq!(
        cmd(&format!(
            "list shadows /for=/mnt/data /shadow={ID} /set={ID2}"
        )),
        want
    );
    assert_eq!(
        cmd(&format!(
            "LIST SHADOWS /For=/mnt/data /SHADOW={ID} /Set={ID2}"
        )),
        want
    );
    assert_eq!(
        cmd(&format!(
            "list shadows --for /mnt/data --shadow {ID} --set={ID2}"
        )),
        want
    );
    assert_eq!(
        cmd(&format!(
            "list shadows --for=/mnt/data --shadow={ID} --set {ID2}"
        )),
        want
    );
    // Values keep their case.
    assert_eq!(
        cmd("list shadows /for=/mnt/Data"),
        Command::ListShadows(ShadowQuery {
            for_volume: Some("/mnt/Data".into()),
            ..Default::default()
        })
    );
    // A value containing '=' is split at the first one only.
    assert_eq!(
        cmd("list shadows /for=/mnt/a=b"),
        Command::ListShadows(ShadowQuery {
            for_volume: Some("/mnt/a=b".into()),
            ..Default::default()
        })
    );
}

#[test]
fn shadow_query_filter() {
    let q = ShadowQuery {
        for_volume: Some("/mnt/data".into()),
        shadow: Some(id()),
        set: None,
    };
    let f = q.to_filter();
    assert_eq!(f.len(), 2);
    assert_eq!(f["for"], "/mnt/data");
    assert_eq!(f["shadow"], ID);
}

#[test]
fn list_shadowstorage() {
    assert_eq!(
        cmd("list shadowstorage"),
        Command::ListShadowStorage(StorageFilter::All)
    );
    assert_eq!(
        cmd("list ShadowStorage /for=/mnt/a"),
        Command::ListShadowStorage(StorageFilter::For("/mnt/a".into()))
    );
    assert_eq!(
        cmd("list shadowstorage --on /mnt/b"),
        Command::ListShadowStorage(StorageFilter::On("/mnt/b".into()))
    );
    assert_eq!(
        err_in(
            "list shadowstorage /for=/a /on=/b",
            CommandKind::ListShadowStorage
        ),
        "/for= and /on= are mutually exclusive for `list shadowstorage`"
    );
}

#[test]
fn create_shadow() {
    let want = Command::CreateShadow {
        for_volume: "/mnt/data".into(),
        autoretry_minutes: None,
    };
    assert_eq!(cmd("create shadow /for=/mnt/data"), want);
    assert_eq!(cmd("Create Shadow --for /mnt/data"), want);
    assert_eq!(
        cmd("create shadow /for=/mnt/data /AutoRetry=5"),
        Command::CreateShadow {
            for_volume: "/mnt/data".into(),
            autoretry_minutes: Some(5),
        }
    );
    assert_eq!(
        cmd("create shadow --auto-retry 7 --for=/mnt/data"),
        Command::CreateShadow {
            for_volume: "/mnt/data".into(),
            autoretry_minutes: Some(7),
        }
    );
    assert_eq!(
        err_in("create shadow", CommandKind::CreateShadow),
        "/for= is required for `create shadow`"
    );
    assert_eq!(
        err_in(
            "create shadow /for=/x /autoretry=soon",
            CommandKind::CreateShadow
        ),
        "invalid /autoretry= value 'soon': expected a whole number of minutes"
    );
}

#[test]
fn delete_shadows() {
    assert_eq!(
        cmd("delete shadows /for=/mnt/data /oldest"),
        Command::DeleteShadows {
            target: DeleteTarget::Oldest {
                for_volume: "/mnt/data".into()
            },
            quiet: false,
        }
    );
    assert_eq!(
        cmd("DELETE SHADOWS --for /mnt/data --all --quiet"),
        Command::DeleteShadows {
            target: DeleteTarget::All {
                for_volume: "/mnt/data".into()
            },
            quiet: true,
        }
    );
    assert_eq!(
        cmd(&format!("delete shadows /shadow={ID} /Quiet")),
        Command::DeleteShadows {
            target: DeleteTarget::Shadow {
                id: id(),
                for_volume: None
            },
            quiet: true,
        }
    );
    assert_eq!(
        cmd(&format!("delete shadows /for=/mnt/data /shadow={ID}")),
        Command::DeleteShadows {
            target: DeleteTarget::Shadow {
                id: id(),
                for_volume: Some("/mnt/data".into())
            },
            quiet: false,
        }
    );
    let k = CommandKind::DeleteShadows;
    for line in [
        "delete shadows /for=/x /oldest /all".to_owned(),
        format!("delete shadows /for=/x /all /shadow={ID}"),
        format!("delete shadows /oldest /shadow={ID}"),
    ] {
        assert_eq!(
            err_in(&line, k),
            "/oldest, /all and /shadow are mutually exclusive"
        );
    }
    assert_eq!(
        err_in("delete shadows /all", k),
        "/for= is required for `delete shadows`"
    );
    assert_eq!(
        err_in("delete shadows /oldest", k),
        "/for= is required for `delete shadows`"
    );
    assert_eq!(
        err_in("delete shadows", k),
        "/for= is required for `delete shadows`"
    );
    assert_eq!(
        err_in("delete shadows /for=/x", k),
        "one of /oldest, /all or /shadow= is required for `delete shadows`"
    );
}

#[test]
fn delete_target_filter() {
    let f = DeleteTarget::Oldest {
        for_volume: "/v".into(),
    }
    .to_filter();
    assert_eq!(f["for"], "/v");
    assert_eq!(f["oldest"], "true");
    let f = DeleteTarget::All {
        for_volume: "/v".into(),
    }
    .to_filter();
    assert_eq!(f["all"], "true");
    let f = DeleteTarget::Shadow {
        id: id(),
        for_volume: None,
    }
    .to_filter();
    assert_eq!(f.len(), 1);
    assert_eq!(f["shadow"], ID);
}

#[test]
fn expose_unexpose() {
    assert_eq!(
        cmd(&format!("expose shadow /shadow={ID} /to=/mnt/snap")),
        Command::ExposeShadow {
            shadow: id(),
            to: "/mnt/snap".into(),
            allow_users: false
        }
    );
    assert_eq!(
        cmd(&format!(
            "Expose Shadow --shadow {ID2} --to /mnt/snap --allow-users"
        )),
        Command::ExposeShadow {
            shadow: id2(),
            to: "/mnt/snap".into(),
            allow_users: true
        }
    );
    assert_eq!(
        cmd(&format!("expose shadow /shadow={ID} /to=/s /AllowUsers")),
        Command::ExposeShadow {
            shadow: id(),
            to: "/s".into(),
            allow_users: true
        }
    );
    let k = CommandKind::ExposeShadow;
    assert_eq!(
        err_in("expose shadow /to=/s", k),
        "/shadow= is required for `expose shadow`"
    );
    assert_eq!(
        err_in(&format!("expose shadow /shadow={ID}"), k),
        "/to= is required for `expose shadow`"
    );
    assert_eq!(
        cmd(&format!("unexpose shadow --shadow={ID}")),
        Command::UnexposeShadow { shadow: id() }
    );
    assert_eq!(
        err_in("unexpose shadow", CommandKind::UnexposeShadow),
        "/shadow= is required for `unexpose shadow`"
    );
}

#[test]
fn bad_id() {
    let m = err_in("unexpose shadow /shadow=nope", CommandKind::UnexposeShadow);
    assert_eq!(
        m,
        "invalid id 'nope' for /shadow=: expected {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}, as `vssadmin list shadows` shows"
    );
    let m = err_in("list shadows /set=123", CommandKind::ListShadows);
    assert!(m.starts_with("invalid id '123' for /set=:"), "{m}");
}

#[test]
fn add_resize_delete_storage() {
    assert_eq!(
        cmd("add shadowstorage /for=/a /on=/b"),
        Command::AddShadowStorage {
            for_volume: "/a".into(),
            on_volume: "/b".into(),
            max_size: None
        }
    );
    assert_eq!(
        cmd("Add ShadowStorage --for /a --on /b --max-size 10GB"),
        Command::AddShadowStorage {
            for_volume: "/a".into(),
            on_volume: "/b".into(),
            max_size: Some(MaxSize::Bytes(10 << 30))
        }
    );
    assert_eq!(
        cmd("resize shadowstorage /for=/a /on=/b /MaxSize=20%"),
        Command::ResizeShadowStorage {
            for_volume: "/a".into(),
            on_volume: "/b".into(),
            max_size: Some(MaxSize::Percent(20))
        }
    );
    assert_eq!(
        cmd("resize shadowstorage /for=/a /on=/b /maxsize=unbounded"),
        Command::ResizeShadowStorage {
            for_volume: "/a".into(),
            on_volume: "/b".into(),
            max_size: Some(MaxSize::Unbounded)
        }
    );
    assert_eq!(
        err_in("add shadowstorage /for=/a", CommandKind::AddShadowStorage),
        "/on= is required for `add shadowstorage`"
    );
    assert_eq!(
        err_in(
            "resize shadowstorage /on=/a",
            CommandKind::ResizeShadowStorage
        ),
        "/for= is required for `resize shadowstorage`"
    );
    let e = err("add shadowstorage /for=/a /on=/b /maxsize=12XB");
    assert_eq!(
        e.message,
        "invalid size '12XB': unknown unit 'XB'; use B, KB, MB, GB, TB, PB or EB (or K, M, G, T, P, E), N% or UNBOUNDED"
    );
    assert!(e
        .hint()
        .contains("vssadmin add shadowstorage /for=PATH /on=PATH [/maxsize=SIZE]"));
    assert!(e.hint().contains("10GB"));

    assert_eq!(
        cmd("delete shadowstorage /for=/a"),
        Command::DeleteShadowStorage {
            for_volume: "/a".into(),
            on_volume: None,
            quiet: false
        }
    );
    assert_eq!(
        cmd("Delete ShadowStorage --for /a --on /b --quiet"),
        Command::DeleteShadowStorage {
            for_volume: "/a".into(),
            on_volume: Some("/b".into()),
            quiet: true
        }
    );
    assert_eq!(
        err_in(
            "delete shadowstorage /on=/b",
            CommandKind::DeleteShadowStorage
        ),
        "/for= is required for `delete shadowstorage`"
    );
}

#[test]
fn revert_and_query() {
    assert_eq!(
        cmd(&format!("revert shadow /shadow={ID}")),
        Command::RevertShadow {
            shadow: id(),
            force_dismount: false
        }
    );
    assert_eq!(
        cmd(&format!("Revert Shadow /Shadow={ID} /ForceDismount")),
        Command::RevertShadow {
            shadow: id(),
            force_dismount: true
        }
    );
    assert_eq!(
        cmd(&format!("revert shadow --force-dismount --shadow {ID}")),
        Command::RevertShadow {
            shadow: id(),
            force_dismount: true
        }
    );
    assert_eq!(
        err_in("revert shadow", CommandKind::RevertShadow),
        "/shadow= is required for `revert shadow`"
    );
    assert_eq!(
        cmd("query reverts"),
        Command::QueryReverts { for_volume: None }
    );
    assert_eq!(
        cmd("Query Reverts --for /a"),
        Command::QueryReverts {
            for_volume: Some("/a".into())
        }
    );
}

#[test]
fn help_forms() {
    for line in ["", "help", "/?", "-?", "--help", "-h", "HELP", "list /?"] {
        assert_eq!(cmd(line), Command::Help { topic: None }, "{line:?}");
    }
    for line in [
        "help create shadow",
        "create shadow /?",
        "Create Shadow --help",
        "create shadow /fro=x --help",
    ] {
        assert_eq!(
            cmd(line),
            Command::Help {
                topic: Some(CommandKind::CreateShadow)
            },
            "{line}"
        );
    }
    let inv = parse(["--json", "--help"]).unwrap();
    assert!(inv.json);
}

#[test]
fn invalid_command() {
    for line in [
        "list",
        "list foo",
        "frobnicate",
        "shadows list",
        "/for=/x",
        "create shadows /for=/x",
    ] {
        let e = err(line);
        assert_eq!(e.message, "Invalid command.", "{line}");
        assert_eq!(e.hint(), supported_commands_hint());
    }
    let h = supported_commands_hint();
    for k in CommandKind::ALL {
        assert!(h.contains(k.name()), "{h}");
    }
}

#[test]
fn switch_errors() {
    let k = CommandKind::CreateShadow;
    assert_eq!(err_in("create shadow /fro=/x", k), "unknown switch /fro");
    assert_eq!(err_in("create shadow --fro /x", k), "unknown switch --fro");
    assert_eq!(err_in("create shadow -x", k), "unknown switch -x");
    assert_eq!(
        err_in("create shadow /for=/x /oldest", k),
        "switch /oldest does not apply to `create shadow`"
    );
    assert_eq!(
        err_in("create shadow /for=/x /For=/y", k),
        "switch /for= given more than once"
    );
    assert_eq!(
        err_in("create shadow /for", k),
        "/for needs a value: /for=PATH"
    );
    assert_eq!(
        err_in("create shadow /for=", k),
        "/for needs a value: /for=PATH"
    );
    assert_eq!(
        err_in("create shadow --for", k),
        "--for needs a value: /for=PATH"
    );
    assert_eq!(
        err_in("create shadow --for --json", k),
        "--for needs a value: /for=PATH"
    );
    assert_eq!(
        err_in(
            "delete shadows /for=/x /all=yes",
            CommandKind::DeleteShadows
        ),
        "/all takes no value"
    );
    assert_eq!(
        err_in("list writers extra", CommandKind::ListWriters),
        "unexpected argument 'extra' for `list writers`"
    );
    assert_eq!(
        err_in("list writers /for=/x", CommandKind::ListWriters),
        "switch /for does not apply to `list writers`"
    );
}

#[test]
fn bad_sizes_name_the_code() {
    // The parser itself is tested in vss-types (storage.rs); here: what the
    // command line makes of its errors.
    for (line, kind, why) in [
        (
            "add shadowstorage /for=/a /on=/b /maxsize=0%",
            CommandKind::AddShadowStorage,
            "invalid size '0%': a percentage must be a whole number from 1 to 100",
        ),
        (
            "resize shadowstorage /for=/a /on=/b /maxsize=1000",
            CommandKind::ResizeShadowStorage,
            "invalid size '1000': the maximum size must be at least 1 MB",
        ),
        (
            "resize shadowstorage /for=/a /on=/b --max-size 10 parsecs",
            CommandKind::ResizeShadowStorage,
            "unexpected argument 'parsecs' for `resize shadowstorage`",
        ),
        (
            "add shadowstorage /for=/a /on=/b /maxsize=16EB",
            CommandKind::AddShadowStorage,
            "invalid size '16EB': the size is too large",
        ),
    ] {
        let e = err(line);
        assert_eq!(e.message, why, "{line}");
        let shown = crate::render::error(&e);
        assert!(
            shown.starts_with(&format!("Error: 0x80070057 E_INVALIDARG: {why}\nHint: ")),
            "{shown}"
        );
        assert!(shown.contains(kind.syntax()), "{shown}");
    }
    assert_eq!(
        err_in(
            "add shadowstorage /for=/a /on=/b /maxsize",
            CommandKind::AddShadowStorage
        ),
        "/maxsize needs a value: /maxsize=SIZE"
    );
    // The spec comes from vss-types: the same type vssd checks.
    assert_eq!(
        cmd("add shadowstorage /for=/a /on=/b /maxsize=1.5t"),
        Command::AddShadowStorage {
            for_volume: "/a".into(),
            on_volume: "/b".into(),
            max_size: Some(vss_types::MaxSize::Bytes(3 << 39))
        }
    );
    assert_eq!(MIN_MAX_SIZE, 1 << 20);
}

#[test]
fn add_delete_volume() {
    let want = Command::AddVolume {
        device: "/dev/sdb1".into(),
        mount: "/srv/data".into(),
    };
    assert_eq!(cmd("add volume /device=/dev/sdb1 /mount=/srv/data"), want);
    assert_eq!(cmd("Add Volume --mount /srv/data --device /dev/sdb1"), want);
    assert_eq!(cmd("ADD VOLUME /Device=/dev/sdb1 --mount=/srv/data"), want);
    // Relative paths are kept here; the binary makes them absolute.
    assert_eq!(
        cmd("add volume /device=disk.img /mount=mnt"),
        Command::AddVolume {
            device: "disk.img".into(),
            mount: "mnt".into(),
        }
    );
    let k = CommandKind::AddVolume;
    assert_eq!(
        err_in("add volume /mount=/srv/data", k),
        "/device= is required for `add volume`"
    );
    assert_eq!(
        err_in("add volume /device=/dev/sdb1", k),
        "/mount= is required for `add volume`"
    );
    assert_eq!(
        err_in("add volume /device /mount=/m", k),
        "/device needs a value: /device=PATH"
    );
    assert_eq!(
        err_in("add volume /device=/d /mount", k),
        "/mount needs a value: /mount=DIR"
    );
    assert_eq!(
        err_in("add volume /device=/d /mount=/m /quiet", k),
        "switch /quiet does not apply to `add volume`"
    );
    assert_eq!(
        err_in("add volume /device=/d /mount=/m /for=/x", k),
        "switch /for does not apply to `add volume`"
    );

    assert_eq!(
        cmd("delete volume /for=/srv/data"),
        Command::DeleteVolume {
            for_volume: "/srv/data".into(),
            quiet: false
        }
    );
    assert_eq!(
        cmd("Delete Volume --for /srv/data --quiet"),
        Command::DeleteVolume {
            for_volume: "/srv/data".into(),
            quiet: true
        }
    );
    let k = CommandKind::DeleteVolume;
    assert_eq!(
        err_in("delete volume /quiet", k),
        "/for= is required for `delete volume`"
    );
    assert_eq!(
        err_in("delete volume /for=/a /device=/dev/sdb1", k),
        "switch /device does not apply to `delete volume`"
    );
    // Plural is not a command: `delete volumes` is invalid.
    assert_eq!(err("delete volumes /for=/a").message, "Invalid command.");
    // /device and /mount belong to `add volume` only.
    assert_eq!(
        err_in(
            "create shadow /for=/a /device=/dev/sdb1",
            CommandKind::CreateShadow
        ),
        "switch /device does not apply to `create shadow`"
    );
}

#[test]
fn linux_extensions() {
    let ext: Vec<CommandKind> = CommandKind::ALL
        .into_iter()
        .filter(|k| k.is_linux_extension())
        .collect();
    assert_eq!(ext, [CommandKind::AddVolume, CommandKind::DeleteVolume]);
    assert!(supported_commands_hint().contains("add volume, delete volume"));
}

#[test]
fn kind_round_trip() {
    for k in CommandKind::ALL {
        let (verb, object) = k.name().split_once(' ').unwrap();
        assert_eq!(CommandKind::from_words(verb, object), Some(k));
        assert!(k.syntax().starts_with(&format!("vssadmin {}", k.name())));
        assert_eq!(k.to_string(), k.name());
    }
}
