//! The simulated provider: accepts any filesystem, keeps no data. It exists
//! so the coordinator's sequence (writers, flush-and-hold, timeouts, crash
//! recovery) can be exercised on filesystems no real provider supports yet,
//! the way stratisd's simulated engine stands beside the real one. It is
//! registered only when the configuration asks for it, and its shadows say
//! plainly that they hold no data.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use vss_types::{Guid, ProviderInfo, ProviderType, Volume, VssCode, VssError, VssResult};

use crate::{Committed, Health, HoldMethod, Provider, ProviderShadow};

pub const SIM_PROVIDER_ID: Guid = Guid::from_u128(0x5e1d_0a7e_0000_4000_8000_0000_0000_0001);

pub struct SimProvider {
    /// How long `commit` takes: lets tests keep writes held for a while.
    commit_delay: Duration,
    live: Mutex<HashSet<Guid>>,
}

impl SimProvider {
    pub fn new(commit_delay: Duration) -> Self {
        SimProvider {
            commit_delay,
            live: Mutex::new(HashSet::new()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<Guid>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Provider for SimProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "vss simulated provider (no data, for tests)".into(),
            provider_type: ProviderType::Software,
            provider_id: SIM_PROVIDER_ID,
            version: env!("CARGO_PKG_VERSION").into(),
            supports: "any filesystem; records the cut, keeps no data".into(),
        }
    }

    fn supports(&self, _volume: &Volume) -> Result<(), String> {
        Ok(())
    }

    fn preference(&self) -> u32 {
        // Below every real provider.
        0
    }

    fn hold_method(&self, _volume: &Volume) -> HoldMethod {
        HoldMethod::Freeze
    }

    fn prepare(&self, _volume: &Volume, _shadow_id: Guid) -> VssResult<()> {
        Ok(())
    }

    fn commit(&self, _volume: &Volume, shadow_id: Guid) -> VssResult<Committed> {
        std::thread::sleep(self.commit_delay);
        self.live().insert(shadow_id);
        Ok(Committed {
            device_object: format!("sim:{shadow_id}"),
            attributes: 0,
            provider_data: String::new(),
        })
    }

    fn abort(&self, _volume: &Volume, shadow_id: Guid) {
        self.live().remove(&shadow_id);
    }

    fn delete(&self, shadow: &ProviderShadow) -> VssResult<()> {
        self.live().remove(&shadow.shadow_id);
        Ok(())
    }

    fn health(&self, shadow: &ProviderShadow) -> Health {
        if self.live().contains(&shadow.shadow_id) {
            Health::Present
        } else {
            Health::Lost("simulated shadows do not survive a restart of vssd".into())
        }
    }

    fn expose(&self, _shadow: &ProviderShadow, _target: &Path) -> VssResult<()> {
        Err(VssError::new(
            VssCode::NotSupported,
            "simulated shadows hold no data and cannot be exposed",
        ))
    }

    fn unexpose(&self, _shadow: &ProviderShadow, _target: &Path) -> VssResult<()> {
        Ok(())
    }
}
