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
fn max_size_units() {
    let b = |s: &str| MaxSize::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(b("1048576"), MaxSize::Bytes(1 << 20));
    assert_eq!(b("1048576B"), MaxSize::Bytes(1 << 20));
    assert_eq!(b("1024KB"), MaxSize::Bytes(1 << 20));
    assert_eq!(b("1024k"), MaxSize::Bytes(1 << 20));
    assert_eq!(b("300MB"), MaxSize::Bytes(300 << 20));
    assert_eq!(b("300m"), MaxSize::Bytes(300 << 20));
    assert_eq!(b("10GB"), MaxSize::Bytes(10 << 30));
    assert_eq!(b("10g"), MaxSize::Bytes(10 << 30));
    assert_eq!(b("1.5G"), MaxSize::Bytes(3 << 29));
    assert_eq!(b("2TB"), MaxSize::Bytes(2 << 40));
    assert_eq!(b("2T"), MaxSize::Bytes(2 << 40));
    assert_eq!(b("1PB"), MaxSize::Bytes(1 << 50));
    assert_eq!(b("1p"), MaxSize::Bytes(1 << 50));
    assert_eq!(b("15EB"), MaxSize::Bytes(15 << 60));
    assert_eq!(b("1E"), MaxSize::Bytes(1 << 60));
    assert_eq!(b(".5GB"), MaxSize::Bytes(1 << 29));
    assert_eq!(b("1%"), MaxSize::Percent(1));
    assert_eq!(b("100%"), MaxSize::Percent(100));
    assert_eq!(b("UNBOUNDED"), MaxSize::Unbounded);
    assert_eq!(b("Unbounded"), MaxSize::Unbounded);
    for m in [
        MaxSize::Bytes(5 << 30),
        MaxSize::Percent(20),
        MaxSize::Unbounded,
    ] {
        assert_eq!(b(&m.to_string()), m);
    }
    assert_eq!("20%".parse::<MaxSize>().unwrap(), MaxSize::Percent(20));
}

#[test]
fn max_size_errors() {
    let m = |s: &str| {
        let e = MaxSize::parse(s).expect_err(s);
        assert_eq!(e.code, VssCode::InvalidArg);
        e.message
    };
    assert!(m("12XB").starts_with("invalid size '12XB': unknown unit 'XB';"));
    assert_eq!(
        m("0%"),
        "invalid size '0%': a percentage must be a whole number from 1 to 100"
    );
    assert_eq!(
        m("101%"),
        "invalid size '101%': a percentage must be a whole number from 1 to 100"
    );
    assert_eq!(
        m("x%"),
        "invalid size 'x%': a percentage must be a whole number from 1 to 100"
    );
    assert_eq!(
        m("GB"),
        "invalid size 'GB': expected a number followed by a unit, e.g. 10GB"
    );
    assert_eq!(
        m("1.2.3GB"),
        "invalid size '1.2.3GB': expected a number followed by a unit, e.g. 10GB"
    );
    assert_eq!(m("-5GB"), "invalid size '-5GB': unknown unit '-5GB'; use B, KB, MB, GB, TB, PB or EB (or K, M, G, T, P, E), N% or UNBOUNDED");
    assert_eq!(m("16EB"), "invalid size '16EB': the size is too large");
    assert_eq!(
        m("99999999999999999999999999999999999999999"),
        "invalid size '99999999999999999999999999999999999999999': the number is too large"
    );
    assert_eq!(
        m("1000"),
        "invalid size '1000': the maximum size must be at least 1 MB"
    );
    assert_eq!(
        m("1023KB"),
        "invalid size '1023KB': the maximum size must be at least 1 MB"
    );
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
