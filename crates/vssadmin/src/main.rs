//! vssadmin: administer the shadow copy service with the Windows verbs.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use vss_client::Client;
use vss_types::{VssCode, VssError, VssResult};
use vssadmin::args::{Command, CommandKind, Invocation, MaxSize, StorageFilter};
use vssadmin::{exit, render};

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let inv = match vssadmin::parse(&argv) {
        Ok(i) => i,
        Err(e) => {
            let json = argv.iter().any(|a| a.eq_ignore_ascii_case("--json"));
            print_error(&e, json);
            return code(exit::BAD_ARGS);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return code(exit::VSS_ERROR);
        }
    };
    let json = inv.json;
    match rt.block_on(run(inv)) {
        Ok(out) => {
            print!("{out}");
            code(exit::SUCCESS)
        }
        Err(e) => {
            print_error(&e, json);
            if vss_client::is_unreachable(&e) {
                code(exit::NO_SERVICE)
            } else {
                code(exit::for_error(&e))
            }
        }
    }
}

fn code(c: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(c as u8)
}

fn print_error(e: &VssError, json: bool) {
    if json {
        println!("{}", render::json::error(e));
    } else {
        eprint!("{}", render::with_header(&render::error(e)));
    }
}

fn local_tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)
}

fn filter(m: std::collections::BTreeMap<String, String>) -> Vec<(&'static str, String)> {
    m.into_iter()
        .filter_map(|(k, v)| {
            let k: &'static str = match k.as_str() {
                "for" => "for",
                "shadow" => "shadow",
                "set" => "set",
                "oldest" => "oldest",
                "all" => "all",
                _ => return None,
            };
            Some((k, v))
        })
        .collect()
}

/// Prints `prompt` (after the header) and reads the answer: `true` only for
/// `Y`. Without a terminal on stdin the answer is No, so a script that
/// forgot `/quiet` deletes nothing.
fn confirm(prompt: &str) -> bool {
    print!("{}", render::with_header(prompt));
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if !std::io::stdin().is_terminal() || std::io::stdin().lock().read_line(&mut answer).is_err() {
        answer.clear();
    }
    answer.trim().eq_ignore_ascii_case("y")
}

/// A path switch made absolute against our working directory: vssd runs
/// elsewhere. Volume names (`\\?\Volume{…}\`) are left as they are.
fn absolute(switch: &str, path: &str) -> VssResult<String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Ok(path.to_owned());
    }
    std::path::absolute(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| VssError::invalid_arg(format!("{switch}{path}: {e}")))
}

async fn run(inv: Invocation) -> VssResult<String> {
    let json = inv.json;
    let text = |body: String| render::with_header(&body);
    if let Command::Help { topic } = inv.command {
        return Ok(text(render::help(topic)));
    }
    let client = Client::connect().await?;
    Ok(match inv.command {
        Command::Help { .. } => unreachable_help(),
        Command::ListWriters => {
            let w = client.list_writers().await?;
            if json {
                render::json::writers(&w)
            } else {
                text(render::list_writers(&w))
            }
        }
        Command::ListProviders => {
            let p = client.list_providers().await?;
            if json {
                render::json::providers(&p)
            } else {
                text(render::list_providers(&p))
            }
        }
        Command::ListVolumes => {
            let v = client.list_volumes().await?;
            if json {
                render::json::volumes(&v)
            } else {
                text(render::list_volumes(&v))
            }
        }
        Command::ListShadows(q) => {
            let s = client.list_shadows(&filter(q.to_filter())).await?;
            if json {
                render::json::shadows(&s)
            } else {
                let providers = client.list_providers().await?;
                let names = render::provider_lookup(&providers);
                text(render::list_shadows(&s, &local_tz(), &names))
            }
        }
        Command::CreateShadow {
            for_volume,
            autoretry_minutes,
        } => {
            let deadline =
                autoretry_minutes.map(|m| Instant::now() + Duration::from_secs(u64::from(m) * 60));
            let props = loop {
                match client
                    .create_shadow(std::slice::from_ref(&for_volume))
                    .await
                {
                    Err(e)
                        if e.code == VssCode::SnapshotSetInProgress
                            && deadline.is_some_and(|d| Instant::now() < d) =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    r => break r?,
                }
            };
            let p = props.into_iter().next().ok_or_else(|| {
                VssError::new(VssCode::Unexpected, "vssd reported no shadow copy")
            })?;
            if json {
                render::json::created(&for_volume, &p)
            } else {
                text(render::create_shadow(&for_volume, &p))
            }
        }
        Command::DeleteShadows { target, quiet } => {
            let f = filter(target.to_filter());
            if !quiet && !json {
                // Ask first, as vssadmin does, showing how many would go.
                let mut sel: Vec<(&str, String)> = f
                    .iter()
                    .filter(|(k, _)| *k != "oldest" && *k != "all")
                    .cloned()
                    .collect();
                if sel.is_empty() {
                    sel = f.clone();
                }
                let mut n = client.list_shadows(&sel).await?.len();
                if f.iter().any(|(k, _)| *k == "oldest") {
                    n = n.min(1);
                }
                if n == 0 {
                    return Ok(text(render::delete_shadows(0)));
                }
                if !confirm(&render::delete_shadows_prompt(n)) {
                    return Ok(render::not_deleted(CommandKind::DeleteShadows));
                }
            }
            let ids = client.delete_shadows(&f).await?;
            if json {
                render::json::deleted(&ids)
            } else if quiet {
                String::new()
            } else {
                render::delete_shadows(ids.len())
            }
        }
        Command::ExposeShadow {
            shadow,
            to,
            allow_users,
        } => {
            let at = client.expose_shadow(shadow, &to, allow_users).await?;
            if json {
                render::json::exposed(shadow, &at)
            } else {
                text(render::exposed(shadow, &at))
            }
        }
        Command::UnexposeShadow { shadow } => {
            client.unexpose_shadow(shadow).await?;
            if json {
                render::json::ok()
            } else {
                text(render::unexposed(shadow))
            }
        }
        Command::ListShadowStorage(f) => {
            let (for_volume, on_volume) = match &f {
                StorageFilter::All => (None, None),
                StorageFilter::For(v) => (Some(v.as_str()), None),
                StorageFilter::On(v) => (None, Some(v.as_str())),
            };
            let a = client.list_shadow_storage(for_volume, on_volume).await?;
            if json {
                render::json::shadow_storage(&a)
            } else {
                text(render::list_shadow_storage(&a))
            }
        }
        Command::AddShadowStorage {
            for_volume,
            on_volume,
            max_size,
        } => {
            let max = max_size.unwrap_or(MaxSize::Unbounded);
            client
                .add_shadow_storage(&for_volume, &on_volume, max)
                .await?;
            if json {
                render::json::ok()
            } else {
                text(render::shadow_storage_added())
            }
        }
        Command::ResizeShadowStorage {
            for_volume,
            on_volume,
            max_size,
        } => {
            let max = max_size.unwrap_or(MaxSize::Unbounded);
            client
                .resize_shadow_storage(&for_volume, &on_volume, max)
                .await?;
            if json {
                render::json::ok()
            } else {
                text(render::shadow_storage_resized())
            }
        }
        Command::DeleteShadowStorage {
            for_volume,
            on_volume,
            quiet,
        } => {
            let on = on_volume.as_deref();
            let mut n = 1;
            if !quiet && !json {
                n = client
                    .list_shadow_storage(Some(&for_volume), on)
                    .await?
                    .len();
                if n == 0 {
                    return Ok(text(render::shadow_storage_deleted(0)));
                }
                if !confirm(&render::delete_shadow_storage_prompt(n)) {
                    return Ok(render::not_deleted(CommandKind::DeleteShadowStorage));
                }
            }
            client.delete_shadow_storage(&for_volume, on).await?;
            if json {
                render::json::ok()
            } else if quiet {
                String::new()
            } else {
                render::shadow_storage_deleted(n)
            }
        }
        Command::RevertShadow {
            shadow,
            force_dismount,
        } => {
            // The volume, for the message only: vssd checks the shadow.
            let volume = client
                .list_shadows(&[("shadow", shadow.to_string())])
                .await
                .ok()
                .and_then(|s| s.into_iter().next())
                .map(|s| s.original_volume);
            client.revert_shadow(shadow, force_dismount).await?;
            if json {
                render::json::revert_started(shadow)
            } else {
                text(render::revert_started(shadow, volume.as_deref()))
            }
        }
        Command::QueryReverts { for_volume } => {
            let r = client.query_reverts(for_volume.as_deref()).await?;
            if json {
                render::json::reverts(&r)
            } else {
                text(render::query_reverts(&r, &local_tz()))
            }
        }
        Command::AddVolume { device, mount } => {
            let device = absolute("/device=", &device)?;
            let mount = absolute("/mount=", &mount)?;
            let v = client.add_volume(&device, &mount).await?;
            if json {
                render::json::volume_added(&v)
            } else {
                text(render::volume_added(&v))
            }
        }
        Command::DeleteVolume { for_volume, quiet } => {
            let for_volume = absolute("/for=", &for_volume)?;
            if !quiet && !json && !confirm(&render::delete_volume_prompt(&for_volume)) {
                return Ok(render::not_deleted(CommandKind::DeleteVolume));
            }
            client.delete_volume(&for_volume).await?;
            if json {
                render::json::ok()
            } else if quiet {
                String::new()
            } else {
                render::volume_deleted(&for_volume)
            }
        }
    })
}

fn unreachable_help() -> String {
    render::help(None)
}
