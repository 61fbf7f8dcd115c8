//! Providers make and keep shadow copies. The coordinator talks to them only
//! through [`Provider`]; the registry picks one per volume the way VSS does:
//! the one the requestor asked for, else the best that supports the volume.
//!
//! Provider calls are synchronous (they are ioctls and file operations); the
//! coordinator runs them on blocking threads. [`Provider::commit`] runs while
//! writes are held, so it must be quick and must not write to any
//! filesystem of the set except through the snapshot operation itself.

pub mod sim;

use std::sync::Arc;

use vss_types::{Guid, ProviderInfo, Volume, VssCode, VssError, VssResult};

/// The error for a shadow whose read-only mount at `target` could not be
/// undone: busy (EBUSY) is `VSS_E_VOLUME_IN_USE`, anything else the
/// provider's own failure.
pub fn unexpose_error(
    shadow: &ProviderShadow,
    target: &std::path::Path,
    e: std::io::Error,
) -> VssError {
    let code = if e.raw_os_error() == Some(16) {
        VssCode::VolumeInUse
    } else {
        VssCode::UnexpectedProviderError
    };
    VssError::new(
        code,
        format!(
            "cannot unexpose shadow {} at {}: {e}",
            shadow.shadow_id,
            target.display()
        ),
    )
}

/// A shadow as the provider knows it: enough to find, expose and delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderShadow {
    pub shadow_id: Guid,
    pub volume: Volume,
    /// Where root can read the shadow (directory or block device).
    pub device_object: String,
    /// Provider-private data recorded in the catalog at commit.
    pub provider_data: String,
}

/// What [`Provider::commit`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub device_object: String,
    /// Attribute bits the provider adds (e.g. `attr::DIFFERENTIAL`).
    pub attributes: u32,
    pub provider_data: String,
}

/// Whether a recorded shadow still exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Present,
    Lost(String),
}

/// How a volume is held for the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldMethod {
    /// The service freezes the filesystem (FIFREEZE) around `commit`.
    Freeze,
    /// The provider's own cut is atomic and a freeze would deadlock it
    /// (btrfs snapshots): `commit` itself is the hold step.
    ProviderCut,
}

pub trait Provider: Send + Sync {
    fn info(&self) -> ProviderInfo;

    /// `Err(reason)` when this provider cannot snapshot the volume; the
    /// reason is shown to the admin ("ext4 on /dev/vda: …").
    fn supports(&self, volume: &Volume) -> Result<(), String>;

    /// Higher wins when several providers support a volume (VSS prefers
    /// hardware, then a software provider specific to the volume, then the
    /// system provider).
    fn preference(&self) -> u32;

    fn hold_method(&self, volume: &Volume) -> HoldMethod;

    /// Before the freeze: check space and limits, set up what `commit`
    /// needs, so that `commit` is short.
    fn prepare(&self, volume: &Volume, shadow_id: Guid) -> VssResult<()>;

    /// Cut the shadow. Runs inside the hold window.
    fn commit(&self, volume: &Volume, shadow_id: Guid) -> VssResult<Committed>;

    /// Undo `prepare` (and `commit`, if it ran) after a failure.
    fn abort(&self, volume: &Volume, shadow_id: Guid);

    fn delete(&self, shadow: &ProviderShadow) -> VssResult<()>;

    fn health(&self, shadow: &ProviderShadow) -> Health;

    /// Make the shadow readable at `target` (an existing empty directory),
    /// read-only.
    fn expose(&self, shadow: &ProviderShadow, target: &std::path::Path) -> VssResult<()>;

    fn unexpose(&self, shadow: &ProviderShadow, target: &std::path::Path) -> VssResult<()>;

    /// Paths the provider writes during `commit` (its shadow storage): they
    /// must not lie on a filesystem frozen for the same set, or the commit
    /// would wait for a thaw that comes only after it.
    fn writable_during_cut(&self, _volume: &Volume) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// Shadows the provider deleted by itself since it started (evicted
    /// for lack of space, oldest first), with the reason: the service
    /// forgets them.
    fn evicted(&self) -> Vec<(Guid, String)> {
        Vec::new()
    }

    /// The most shadows the provider keeps of `volume`, and whether it
    /// deletes the oldest to make room for a new one (Windows'
    /// MaxShadowCopies) instead of refusing it. `None`: the service's
    /// limit of 64 applies.
    fn shadow_limit(&self, _volume: &Volume) -> Option<(u32, bool)> {
        None
    }
}

/// The registered providers (`vssadmin list providers`).
#[derive(Default, Clone)]
pub struct Registry {
    providers: Vec<Arc<dyn Provider>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, p: Arc<dyn Provider>) -> VssResult<()> {
        let id = p.info().provider_id;
        if self.get(id).is_some() {
            return Err(VssError::new(
                VssCode::ProviderAlreadyRegistered,
                format!("provider {id} is already registered"),
            ));
        }
        self.providers.push(p);
        Ok(())
    }

    pub fn list(&self) -> Vec<ProviderInfo> {
        self.providers.iter().map(|p| p.info()).collect()
    }

    pub fn get(&self, id: Guid) -> Option<Arc<dyn Provider>> {
        self.providers
            .iter()
            .find(|p| p.info().provider_id == id)
            .cloned()
    }

    /// VSS provider selection: the requested provider if given (it must
    /// support the volume), else the most preferred one that supports it.
    pub fn choose(&self, volume: &Volume, requested: Guid) -> VssResult<Arc<dyn Provider>> {
        if !requested.is_null() {
            let p = self.get(requested).ok_or_else(|| {
                VssError::new(
                    VssCode::ProviderNotRegistered,
                    format!("provider {requested} is not registered"),
                )
            })?;
            return match p.supports(volume) {
                Ok(()) => Ok(p),
                Err(reason) => Err(VssError::new(
                    VssCode::VolumeNotSupportedByProvider,
                    format!(
                        "{} on {} ({}): provider '{}' cannot snapshot it: {reason}",
                        volume.fs_type,
                        volume.device,
                        volume.mount_point,
                        p.info().name
                    ),
                )),
            };
        }
        let mut reasons = Vec::new();
        let mut best: Option<&Arc<dyn Provider>> = None;
        for p in &self.providers {
            match p.supports(volume) {
                Ok(()) => {
                    if best.is_none_or(|b| p.preference() > b.preference()) {
                        best = Some(p);
                    }
                }
                Err(r) => reasons.push(format!("{}: {r}", p.info().name)),
            }
        }
        best.cloned().ok_or_else(|| {
            VssError::new(
                VssCode::VolumeNotSupported,
                format!(
                    "{} on {} ({}): no provider can snapshot it{}",
                    volume.fs_type,
                    volume.device,
                    volume.mount_point,
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", reasons.join("; "))
                    }
                ),
            )
            .with_hint(
                "Keep the data on btrfs or on an LVM logical volume, or put the volume \
                 under the copy-on-write software provider (`vssadmin add volume \
                 /device=DEV /mount=DIR`); `vssadmin list providers` shows what each \
                 provider supports.",
            )
        })
    }
}
