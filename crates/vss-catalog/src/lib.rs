//! The catalog: every shadow the service reported created, and every set
//! that was in flight when the service stopped. SQLite in WAL mode under the
//! state directory, which must never be on a volume being frozen.
//!
//! Reconciliation with what exists on disk is the coordinator's job; the
//! catalog only records. A shadow whose storage vanished is marked
//! [`ShadowState::Lost`], never silently deleted.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use vss_types::{Guid, ShadowProp, ShadowState, SnapshotContext, VssCode, VssError, VssResult};

const SCHEMA_VERSION: i64 = 1;

/// A shadow as recorded: its properties plus what the provider and the
/// service need to manage it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub prop: ShadowProp,
    pub provider_data: String,
    /// The original volume's filesystem and device, for reconciliation.
    pub fs_type: String,
    pub device: String,
    pub volume_guid: Guid,
    /// Bus name of the requestor session that owns a non-persistent
    /// shadow; it is released when that connection ends.
    pub owner: Option<String>,
}

/// A volume of a set in flight: enough to thaw it and to undo its shadow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightVolume {
    pub mount_point: String,
    pub shadow_id: Guid,
    pub provider_id: Guid,
    pub frozen_by_service: bool,
}

/// A snapshot set the service had started and not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightSet {
    pub set_id: Guid,
    pub started_unix_ms: i64,
    pub volumes: Vec<InflightVolume>,
}

/// A set found unfinished at start and cleaned up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedSet {
    pub set_id: Guid,
    pub reason: String,
    pub when_unix_ms: i64,
    pub volumes: Vec<String>,
}

pub struct Catalog {
    conn: Mutex<Connection>,
}

fn db_err(e: rusqlite::Error) -> VssError {
    VssError::new(VssCode::Unexpected, format!("catalog database error: {e}")).with_hint(
        "Check that the state directory (state-dir in /etc/vss/vss.toml) is writable and not full.",
    )
}

fn json_err(e: serde_json::Error) -> VssError {
    VssError::new(
        VssCode::Unexpected,
        format!("catalog record is corrupt: {e}"),
    )
}

fn parse_guid(s: String) -> rusqlite::Result<Guid> {
    Guid::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> VssResult<Self> {
        let conn = Connection::open(path).map_err(db_err)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> VssResult<Self> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(conn: Connection) -> VssResult<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS shadows (
                 shadow_id TEXT PRIMARY KEY,
                 set_id TEXT NOT NULL,
                 original_volume TEXT NOT NULL,
                 created_unix_ms INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 owner TEXT,
                 record TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS shadows_by_volume ON shadows (original_volume, created_unix_ms);
             CREATE TABLE IF NOT EXISTS inflight_sets (set_id TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS aborted_sets (set_id TEXT PRIMARY KEY, when_unix_ms INTEGER NOT NULL, record TEXT NOT NULL);",
        )
        .map_err(db_err)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )
                .map_err(db_err)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(VssError::new(
                    VssCode::Unexpected,
                    format!("catalog schema version {v} is not supported (this vssd knows {SCHEMA_VERSION})"),
                )
                .with_hint("Run the vssd version that wrote this catalog, or move the state directory aside."))
            }
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert_shadow(&self, rec: &ShadowRecord) -> VssResult<()> {
        let json = serde_json::to_string(rec).map_err(json_err)?;
        self.conn()
            .execute(
                "INSERT INTO shadows (shadow_id, set_id, original_volume, created_unix_ms, state, owner, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rec.prop.shadow_id.to_string(),
                    rec.prop.set_id.to_string(),
                    rec.prop.original_volume,
                    rec.prop.created_unix_ms,
                    state_word(rec.prop.state),
                    rec.owner,
                    json
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Replaces a shadow's record (state, exposure…).
    pub fn update_shadow(&self, rec: &ShadowRecord) -> VssResult<()> {
        let json = serde_json::to_string(rec).map_err(json_err)?;
        let n = self
            .conn()
            .execute(
                "UPDATE shadows SET state = ?2, owner = ?3, record = ?4 WHERE shadow_id = ?1",
                params![
                    rec.prop.shadow_id.to_string(),
                    state_word(rec.prop.state),
                    rec.owner,
                    json
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Err(not_found(rec.prop.shadow_id));
        }
        Ok(())
    }

    pub fn remove_shadow(&self, id: Guid) -> VssResult<()> {
        self.conn()
            .execute(
                "DELETE FROM shadows WHERE shadow_id = ?1",
                params![id.to_string()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn shadow(&self, id: Guid) -> VssResult<ShadowRecord> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM shadows WHERE shadow_id = ?1",
                params![id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        let json = json.ok_or_else(|| not_found(id))?;
        serde_json::from_str(&json).map_err(json_err)
    }

    /// All shadows, oldest first.
    pub fn shadows(&self) -> VssResult<Vec<ShadowRecord>> {
        self.query_records(
            "SELECT record FROM shadows ORDER BY created_unix_ms, shadow_id",
            [],
        )
    }

    /// Shadows of one volume (by mount point), oldest first.
    pub fn shadows_of_volume(&self, mount_point: &str) -> VssResult<Vec<ShadowRecord>> {
        self.query_records(
            "SELECT record FROM shadows WHERE original_volume = ?1 ORDER BY created_unix_ms, shadow_id",
            params![mount_point],
        )
    }

    /// Non-persistent shadows owned by a requestor connection.
    pub fn shadows_owned_by(&self, owner: &str) -> VssResult<Vec<ShadowRecord>> {
        self.query_records(
            "SELECT record FROM shadows WHERE owner = ?1 ORDER BY created_unix_ms",
            params![owner],
        )
    }

    fn query_records<P: rusqlite::Params>(&self, sql: &str, p: P) -> VssResult<Vec<ShadowRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql).map_err(db_err)?;
        let rows = stmt
            .query_map(p, |r: &Row<'_>| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row.map_err(db_err)?).map_err(json_err)?);
        }
        Ok(out)
    }

    /// Records a set before anything is frozen, so a restarted service can
    /// thaw and undo it.
    pub fn begin_inflight(&self, set: &InflightSet) -> VssResult<()> {
        let json = serde_json::to_string(set).map_err(json_err)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO inflight_sets (set_id, record) VALUES (?1, ?2)",
                params![set.set_id.to_string(), json],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn end_inflight(&self, set_id: Guid) -> VssResult<()> {
        self.conn()
            .execute(
                "DELETE FROM inflight_sets WHERE set_id = ?1",
                params![set_id.to_string()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn inflight(&self) -> VssResult<Vec<InflightSet>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT record FROM inflight_sets")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row.map_err(db_err)?).map_err(json_err)?);
        }
        Ok(out)
    }

    pub fn record_aborted(&self, a: &AbortedSet) -> VssResult<()> {
        let json = serde_json::to_string(a).map_err(json_err)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO aborted_sets (set_id, when_unix_ms, record) VALUES (?1, ?2, ?3)",
                params![a.set_id.to_string(), a.when_unix_ms, json],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn aborted_sets(&self) -> VssResult<Vec<AbortedSet>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT set_id, record FROM aborted_sets ORDER BY when_unix_ms")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                let _id = parse_guid(r.get(0)?)?;
                r.get::<_, String>(1)
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row.map_err(db_err)?).map_err(json_err)?);
        }
        Ok(out)
    }
}

fn state_word(s: ShadowState) -> &'static str {
    match s {
        ShadowState::Created => "created",
        ShadowState::Lost => "lost",
    }
}

fn not_found(id: Guid) -> VssError {
    VssError::new(
        VssCode::ObjectNotFound,
        format!("shadow copy {id} not found"),
    )
    .with_hint("List the shadow copies with `vssadmin list shadows`.")
}

/// A record for tests and tools.
pub fn sample_record(volume: &str, created_unix_ms: i64) -> ShadowRecord {
    let ctx = SnapshotContext::ClientAccessibleWriters;
    ShadowRecord {
        prop: ShadowProp {
            shadow_id: Guid::new_random(),
            set_id: Guid::new_random(),
            count: 1,
            device_object: format!("{volume}/.vss-shadows/x"),
            original_volume: volume.into(),
            original_volume_name: String::new(),
            originating_machine: "host".into(),
            service_machine: "host".into(),
            exposed_name: None,
            exposed_path: None,
            provider_id: Guid::NULL,
            context: ctx,
            attributes: ctx.attributes(),
            created_unix_ms,
            state: ShadowState::Created,
            hold_micros: 0,
            lost_reason: None,
        },
        provider_data: String::new(),
        fs_type: "btrfs".into(),
        device: "/dev/loop0".into(),
        volume_guid: Guid::NULL,
        owner: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadows_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let a = sample_record("/mnt/a", 2);
        let b = sample_record("/mnt/a", 1);
        let c = sample_record("/mnt/b", 3);
        {
            let cat = Catalog::open(&path).unwrap();
            for r in [&a, &b, &c] {
                cat.insert_shadow(r).unwrap();
            }
        }
        let cat = Catalog::open(&path).unwrap();
        let vol = cat.shadows_of_volume("/mnt/a").unwrap();
        assert_eq!(vol, vec![b.clone(), a.clone()], "oldest first");
        let mut lost = a.clone();
        lost.prop.state = ShadowState::Lost;
        lost.prop.lost_reason = Some("gone".into());
        cat.update_shadow(&lost).unwrap();
        assert_eq!(cat.shadow(a.prop.shadow_id).unwrap(), lost);
        cat.remove_shadow(c.prop.shadow_id).unwrap();
        assert_eq!(
            cat.shadow(c.prop.shadow_id).unwrap_err().code,
            VssCode::ObjectNotFound
        );
        assert_eq!(cat.shadows().unwrap().len(), 2);
    }

    #[test]
    fn inflight_and_aborted() {
        let cat = Catalog::open_in_memory().unwrap();
        let set = InflightSet {
            set_id: Guid::new_random(),
            started_unix_ms: 5,
            volumes: vec![InflightVolume {
                mount_point: "/mnt/x".into(),
                shadow_id: Guid::new_random(),
                provider_id: Guid::NULL,
                frozen_by_service: true,
            }],
        };
        cat.begin_inflight(&set).unwrap();
        assert_eq!(cat.inflight().unwrap(), vec![set.clone()]);
        cat.end_inflight(set.set_id).unwrap();
        assert!(cat.inflight().unwrap().is_empty());
        let ab = AbortedSet {
            set_id: set.set_id,
            reason: "crash".into(),
            when_unix_ms: 9,
            volumes: vec!["/mnt/x".into()],
        };
        cat.record_aborted(&ab).unwrap();
        assert_eq!(cat.aborted_sets().unwrap(), vec![ab]);
    }
}
