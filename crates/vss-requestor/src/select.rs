//! Component selection: which components of which writers a backup takes,
//! following the VSS rules on selectability and logical paths.
//!
//! - A component whose logical path lies under another component's full
//!   path is that component's *subcomponent*. A selectable component and
//!   its subcomponents form a *component set*; selecting the set's top
//!   takes all of them.
//! - A non-selectable component with no selectable ancestor is always
//!   backed up when its writer takes part.
//! - A selectable component with a selectable ancestor may also be
//!   selected on its own; a non-selectable subcomponent only comes with
//!   its set.
//! - Only the components the requestor selects go into the Backup
//!   Components Document; subcomponents are implied by their set.
//! - A selected component's dependencies (on other writers' components)
//!   are selected too.

use std::collections::BTreeSet;

use vss_types::documents::{BackupComponents, BackupType, WmComponent, WriterMetadata};
use vss_types::{Guid, VssCode, VssError, VssResult, WriterStatus};

/// A writer that answered Identify, with its parsed metadata document.
#[derive(Clone, Debug)]
pub struct WriterInfo {
    pub status: WriterStatus,
    pub wmd: WriterMetadata,
    /// The document as the writer sent it (saved with the backup).
    pub wmd_xml: String,
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every component of the writer with this name.
    Writer(String),
    /// One component (set): `[WRITER:]logical/path/name`, with `/` or `\`
    /// between segments.
    Component {
        writer: Option<String>,
        path: String,
    },
}

impl Selector {
    /// Parses `--component` syntax: `[WRITER:]logical/path/name`.
    pub fn component(spec: &str) -> VssResult<Selector> {
        let (writer, path) = match spec.split_once(':') {
            Some((w, p)) => (Some(w.trim().to_owned()), p),
            None => (None, spec),
        };
        let path: Vec<&str> = path.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
        if path.is_empty() || writer.as_deref() == Some("") {
            return Err(
                VssError::invalid_arg(format!("'{spec}' does not name a component")).with_hint(
                    "Write --component [WRITER:]LOGICAL/PATH/NAME, e.g. SqliteWriter:app; \
                 `vssbackup components` lists them.",
                ),
            );
        }
        Ok(Selector::Component {
            writer,
            path: path.join("\\"),
        })
    }
}

/// One component taken by the backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedComponent {
    /// Index into the writers list given to [`select`].
    pub writer: usize,
    pub logical_path: String,
    pub name: String,
    /// Whether the component goes into the BCD (set tops and explicitly
    /// selected components; implied subcomponents do not).
    pub in_bcd: bool,
    /// Why it was taken, for the user.
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Named by the user (or its writer was).
    Selected,
    /// A non-selectable component without a selectable ancestor: always
    /// backed up when its writer takes part.
    AlwaysIncluded,
    /// A subcomponent of a selected set.
    InSet,
    /// Another selected component depends on it.
    Dependency,
}

impl SelectedComponent {
    pub fn full_path(&self) -> String {
        vss_types::documents::full_path(&self.logical_path, &self.name)
    }
}

/// The outcome of selection: components in a stable order (writer, then
/// full path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub components: Vec<SelectedComponent>,
}

/// The key a backup uses for a component in its manifest and summary:
/// `WRITER:logical\path\name`.
pub fn component_key(writer_name: &str, logical_path: &str, name: &str) -> String {
    format!(
        "{writer_name}:{}",
        vss_types::documents::full_path(logical_path, name)
    )
}

/// Whether `c` lies under the component `top` (is in its set).
fn is_under(c: &WmComponent, top: &WmComponent) -> bool {
    let top_path = top.full_path();
    c.logical_path == top_path || c.logical_path.starts_with(&format!("{top_path}\\"))
}

/// The nearest selectable ancestor of `c` among `all`, if any.
fn selectable_ancestor<'a>(c: &WmComponent, all: &'a [WmComponent]) -> Option<&'a WmComponent> {
    all.iter()
        .filter(|a| a.selectable && !std::ptr::eq(*a, c) && is_under(c, a))
        .max_by_key(|a| a.full_path().len())
}

/// The components that stand on their own in a writer: selectable ones
/// without a selectable ancestor, and non-selectable ones without one
/// (always included).
fn tops(w: &WriterMetadata) -> Vec<&WmComponent> {
    w.components
        .iter()
        .filter(|c| selectable_ancestor(c, &w.components).is_none())
        .filter(|c| {
            // A non-selectable component under a non-selectable top is
            // implied by that top.
            !w.components
                .iter()
                .any(|a| !std::ptr::eq(a, *c) && !a.selectable && !c.selectable && is_under(c, a))
        })
        .collect()
}

struct Picker<'a> {
    writers: &'a [WriterInfo],
    picked: Vec<SelectedComponent>,
    seen: BTreeSet<(usize, String)>,
}

impl Picker<'_> {
    /// Takes component `c` of writer `wi` (and its set).
    fn take(&mut self, wi: usize, c: &WmComponent, reason: Reason, in_bcd: bool) {
        let w = &self.writers[wi].wmd;
        if !self.seen.insert((wi, c.full_path())) {
            // Already taken as part of a set: an explicit selection of a
            // selectable subcomponent still goes into the BCD.
            if in_bcd {
                if let Some(p) = self.picked.iter_mut().find(|p| {
                    p.writer == wi && p.logical_path == c.logical_path && p.name == c.name
                }) {
                    p.in_bcd = true;
                    p.reason = reason;
                }
            }
            return;
        }
        self.picked.push(SelectedComponent {
            writer: wi,
            logical_path: c.logical_path.clone(),
            name: c.name.clone(),
            in_bcd,
            reason,
        });
        for sub in w.components.iter().filter(|s| is_under(s, c)) {
            self.take(wi, sub, Reason::InSet, false);
        }
        for d in &c.dependencies {
            let Some((dwi, dc)) = self.writers.iter().enumerate().find_map(|(i, x)| {
                (x.wmd.writer_id == d.writer_id)
                    .then(|| x.wmd.component(&d.logical_path, &d.component_name))
                    .flatten()
                    .map(|dc| (i, dc))
            }) else {
                continue;
            };
            self.take(dwi, dc, Reason::Dependency, true);
        }
    }

    /// The writer takes part: its always-included components come along.
    fn writer_takes_part(&mut self, wi: usize) {
        let w = &self.writers[wi].wmd;
        for c in tops(w).into_iter().filter(|c| !c.selectable) {
            self.take(wi, c, Reason::AlwaysIncluded, true);
        }
    }
}

/// Applies `selectors` to the writers' metadata. With no selectors, every
/// writer takes part with all its components.
pub fn select(writers: &[WriterInfo], selectors: &[Selector]) -> VssResult<Selection> {
    let mut p = Picker {
        writers,
        picked: Vec::new(),
        seen: BTreeSet::new(),
    };
    let all_writers: Vec<Selector> = writers
        .iter()
        .map(|w| Selector::Writer(w.wmd.writer_name.clone()))
        .collect();
    let selectors = if selectors.is_empty() {
        &all_writers[..]
    } else {
        selectors
    };
    for s in selectors {
        match s {
            Selector::Writer(name) => {
                let found: Vec<usize> = writers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.wmd.writer_name == *name)
                    .map(|(i, _)| i)
                    .collect();
                if found.is_empty() {
                    return Err(unknown_writer(name, writers));
                }
                for wi in found {
                    for c in tops(&writers[wi].wmd) {
                        let reason = if c.selectable {
                            Reason::Selected
                        } else {
                            Reason::AlwaysIncluded
                        };
                        p.take(wi, c, reason, true);
                    }
                }
            }
            Selector::Component { writer, path } => {
                let (wi, c) = find_component(writers, writer.as_deref(), path)?;
                if !c.selectable && selectable_ancestor(c, &writers[wi].wmd.components).is_some() {
                    let top =
                        selectable_ancestor(c, &writers[wi].wmd.components).expect("checked above");
                    return Err(VssError::invalid_arg(format!(
                        "component '{}' of writer '{}' is not selectable on its own",
                        c.full_path(),
                        writers[wi].wmd.writer_name
                    ))
                    .with_hint(format!(
                        "Select its component set instead: --component '{}:{}'.",
                        writers[wi].wmd.writer_name,
                        top.full_path().replace('\\', "/")
                    )));
                }
                let reason = if c.selectable {
                    Reason::Selected
                } else {
                    Reason::AlwaysIncluded
                };
                p.take(wi, c, reason, true);
                p.writer_takes_part(wi);
            }
        }
    }
    let mut picked = p.picked;
    picked.sort_by_key(|a| (a.writer, a.full_path()));
    Ok(Selection { components: picked })
}

fn unknown_writer(name: &str, writers: &[WriterInfo]) -> VssError {
    let names: BTreeSet<&str> = writers.iter().map(|w| w.wmd.writer_name.as_str()).collect();
    VssError::new(
        VssCode::ObjectNotFound,
        format!("no writer named '{name}' answered"),
    )
    .with_hint(if names.is_empty() {
        "No writer is registered; `vssadmin list writers` shows them.".to_owned()
    } else {
        format!(
            "Writers that answered: {}. `vssadmin list writers` shows their state.",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

fn find_component<'a>(
    writers: &'a [WriterInfo],
    writer: Option<&str>,
    path: &str,
) -> VssResult<(usize, &'a WmComponent)> {
    if let Some(w) = writer {
        if !writers.iter().any(|x| x.wmd.writer_name == w) {
            return Err(unknown_writer(w, writers));
        }
    }
    let hits: Vec<(usize, &WmComponent)> = writers
        .iter()
        .enumerate()
        .filter(|(_, w)| writer.is_none_or(|n| w.wmd.writer_name == n))
        .flat_map(|(i, w)| w.wmd.components.iter().map(move |c| (i, c)))
        .filter(|(_, c)| c.full_path() == path)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(VssError::new(
            VssCode::ObjectNotFound,
            format!("no writer has a component '{}'", path.replace('\\', "/")),
        )
        .with_hint("`vssbackup components` lists every writer's components.")),
        _ => Err(VssError::invalid_arg(format!(
            "several writers have a component '{}'",
            path.replace('\\', "/")
        ))
        .with_hint("Name the writer: --component WRITER:LOGICAL/PATH/NAME.")),
    }
}

impl Selection {
    /// The Backup Components Document for this selection.
    pub fn to_bcd(
        &self,
        writers: &[WriterInfo],
        backup_type: BackupType,
    ) -> VssResult<BackupComponents> {
        let mut bcd = BackupComponents::new(backup_type, true);
        for s in self.components.iter().filter(|s| s.in_bcd) {
            let w = &writers[s.writer].wmd;
            let c = w
                .component(&s.logical_path, &s.name)
                .ok_or_else(|| VssError::new(VssCode::Unexpected, "selected component vanished"))?;
            bcd.add_component(
                w.writer_id,
                w.instance_id,
                c.component_type,
                &s.logical_path,
                &s.name,
            )?;
        }
        Ok(bcd)
    }

    /// The BCD component that stands for `s` (itself, or the top of its
    /// set): success and failure are recorded there.
    pub fn bcd_owner<'a>(&'a self, s: &'a SelectedComponent) -> &'a SelectedComponent {
        if s.in_bcd {
            return self
                .components
                .iter()
                .find(|x| x == &s)
                .expect("s is one of ours");
        }
        self.components
            .iter()
            .filter(|x| {
                x.in_bcd
                    && x.writer == s.writer
                    && (s.logical_path == x.full_path()
                        || s.logical_path.starts_with(&format!("{}\\", x.full_path())))
            })
            .max_by_key(|x| x.full_path().len())
            .unwrap_or(s)
    }

    /// Writers taking part (indexes), in order.
    pub fn writers(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.components.iter().map(|c| c.writer).collect();
        set.into_iter().collect()
    }
}

/// Writer id and instance of writer `i`, for the BCD.
pub fn writer_ids(writers: &[WriterInfo], i: usize) -> (Guid, Guid) {
    (writers[i].wmd.writer_id, writers[i].wmd.instance_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vss_types::documents::{ComponentType, SourceType, UsageType};
    use vss_types::{WriterKind, WriterState};

    fn writer(name: &str, id: u128, comps: &[(&str, &str, bool)]) -> WriterInfo {
        let mut wmd = WriterMetadata::new(
            name,
            Guid::from_u128(id),
            Guid::from_u128(id + 1000),
            UsageType::UserData,
            SourceType::TransactedDb,
        );
        for (lp, n, sel) in comps {
            wmd.add_component(WmComponent::new(ComponentType::FileGroup, *lp, *n).selectable(*sel))
                .unwrap();
        }
        WriterInfo {
            status: WriterStatus {
                name: name.into(),
                writer_id: Guid::from_u128(id),
                instance_id: Guid::from_u128(id + 1000),
                state: WriterState::Stable,
                last_error: VssCode::Ok,
                last_error_message: None,
                kind: WriterKind::Bus,
                pid: None,
                uid: None,
                timeout_secs: 60,
            },
            wmd_xml: wmd.to_xml(),
            wmd,
        }
    }

    fn names(s: &Selection) -> Vec<(String, bool)> {
        s.components
            .iter()
            .map(|c| (c.full_path(), c.in_bcd))
            .collect()
    }

    fn sample() -> Vec<WriterInfo> {
        vec![
            writer(
                "W",
                1,
                &[
                    ("", "config", false),      // always included
                    ("", "db", true),           // selectable top
                    ("db", "log", false),       // in db's set
                    ("db", "idx", true),        // selectable subcomponent
                    ("db\\idx", "part", false), // in idx's set
                    ("", "cache", true),        // another selectable top
                ],
            ),
            writer("Other", 2, &[("", "db", true)]),
        ]
    }

    #[test]
    fn a_set_brings_its_subcomponents_and_the_writer_its_fixed_parts() {
        let w = sample();
        let s = select(&w, &[Selector::component("W:db").unwrap()]).unwrap();
        assert_eq!(
            names(&s),
            vec![
                ("config".into(), true),
                ("db".into(), true),
                ("db\\idx".into(), false),
                ("db\\idx\\part".into(), false),
                ("db\\log".into(), false),
            ]
        );
        let bcd = s.to_bcd(&w, BackupType::Full).unwrap();
        assert_eq!(bcd.writers.len(), 1);
        assert_eq!(bcd.writers[0].components.len(), 2);
        let part = s.components.iter().find(|c| c.name == "part").unwrap();
        assert_eq!(s.bcd_owner(part).name, "db");
    }

    #[test]
    fn a_selectable_subcomponent_stands_alone() {
        let w = sample();
        let s = select(&w, &[Selector::component("W:db/idx").unwrap()]).unwrap();
        assert_eq!(
            names(&s),
            vec![
                ("config".into(), true),
                ("db\\idx".into(), true),
                ("db\\idx\\part".into(), false),
            ]
        );
    }

    #[test]
    fn non_selectable_subcomponent_is_refused_with_its_set_named() {
        let w = sample();
        let e = select(&w, &[Selector::component("W:db/log").unwrap()]).unwrap_err();
        assert_eq!(e.code, VssCode::InvalidArg);
        assert!(e.hint().contains("W:db"), "{}", e.hint());
    }

    #[test]
    fn ambiguous_and_unknown_names() {
        let w = sample();
        let e = select(&w, &[Selector::component("db").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("several writers"));
        let e = select(&w, &[Selector::Writer("Nope".into())]).unwrap_err();
        assert_eq!(e.code, VssCode::ObjectNotFound);
        assert!(e.hint().contains("Other"));
        assert!(Selector::component("W:").is_err());
        assert!(Selector::component("").is_err());
    }

    #[test]
    fn whole_writer_and_default_take_every_top() {
        let w = sample();
        let s = select(&w, &[Selector::Writer("W".into())]).unwrap();
        let in_bcd: Vec<String> = s
            .components
            .iter()
            .filter(|c| c.in_bcd)
            .map(|c| c.full_path())
            .collect();
        assert_eq!(in_bcd, vec!["cache", "config", "db"]);
        let all = select(&w, &[]).unwrap();
        assert_eq!(all.writers(), vec![0, 1]);
    }

    #[test]
    fn dependencies_come_along() {
        let mut w = sample();
        w[0].wmd
            .add_component_dependency("", "cache", Guid::from_u128(2), "", "db")
            .unwrap();
        let s = select(&w, &[Selector::component("W:cache").unwrap()]).unwrap();
        let dep = s.components.iter().find(|c| c.writer == 1).unwrap();
        assert_eq!(dep.reason, Reason::Dependency);
        assert!(dep.in_bcd);
    }
}
