//! Typed client proxies for the interfaces of vssd and of writers.

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::ObjectPath;

/// `org.vss.Requestor1`, used by vssadmin and the requestor library.
#[proxy(
    interface = "org.vss.Requestor1",
    default_service = "org.vss.Vssd",
    default_path = "/org/vss/Vssd"
)]
pub trait Requestor {
    fn list_writers(&self) -> zbus::Result<String>;
    fn list_providers(&self) -> zbus::Result<String>;
    fn list_shadows(&self, filter: HashMap<&str, &str>) -> zbus::Result<String>;
    fn list_volumes(&self) -> zbus::Result<String>;
    fn list_aborted_sets(&self) -> zbus::Result<String>;

    fn start_session(&self, options_json: &str) -> zbus::Result<String>;
    fn gather_writer_metadata(&self, session: &str) -> zbus::Result<String>;
    fn prepare_for_backup(&self, session: &str, bcd: &str) -> zbus::Result<String>;
    fn start_snapshot_set(&self, session: &str) -> zbus::Result<String>;
    fn add_to_snapshot_set(
        &self,
        session: &str,
        volume: &str,
        provider_id: &str,
    ) -> zbus::Result<String>;
    fn do_snapshot_set(&self, session: &str) -> zbus::Result<String>;
    fn get_backup_components(&self, session: &str) -> zbus::Result<String>;
    fn backup_complete(&self, session: &str, bcd: &str) -> zbus::Result<String>;
    fn gather_writer_status(&self, session: &str) -> zbus::Result<String>;
    fn abort_backup(&self, session: &str) -> zbus::Result<()>;
    fn end_session(&self, session: &str) -> zbus::Result<()>;

    fn start_restore_session(&self, options_json: &str, bcd: &str) -> zbus::Result<String>;
    fn pre_restore(&self, session: &str, bcd: &str) -> zbus::Result<String>;
    fn post_restore(&self, session: &str, bcd: &str) -> zbus::Result<String>;

    fn delete_shadows(&self, filter: HashMap<&str, &str>) -> zbus::Result<String>;
    fn expose_shadow(
        &self,
        shadow_id: &str,
        target: &str,
        allow_users: bool,
    ) -> zbus::Result<String>;
    fn unexpose_shadow(&self, shadow_id: &str) -> zbus::Result<()>;
}

/// `org.vss.Storage1`: software volumes, shadow storage and reverts of the
/// copy-on-write provider, used by vssadmin. Lists and property sets are
/// JSON strings; an empty string stands for "none" (`on_volume`,
/// `for_volume` of QueryReverts) or "unbounded" (`max_size`).
#[proxy(
    interface = "org.vss.Storage1",
    default_service = "org.vss.Vssd",
    default_path = "/org/vss/Vssd"
)]
pub trait Storage {
    fn add_volume(&self, device: &str, mount: &str) -> zbus::Result<String>;
    fn delete_volume(&self, for_volume: &str) -> zbus::Result<()>;
    fn list_software_volumes(&self) -> zbus::Result<String>;
    fn list_shadow_storage(&self, filter: HashMap<&str, &str>) -> zbus::Result<String>;
    fn add_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max_size: &str,
    ) -> zbus::Result<()>;
    fn resize_shadow_storage(
        &self,
        for_volume: &str,
        on_volume: &str,
        max_size: &str,
    ) -> zbus::Result<()>;
    fn delete_shadow_storage(&self, for_volume: &str, on_volume: &str) -> zbus::Result<()>;
    fn revert_shadow(&self, shadow_id: &str, force_dismount: bool) -> zbus::Result<()>;
    fn query_reverts(&self, for_volume: &str) -> zbus::Result<String>;
}

/// `org.vss.WriterHost1`, used by the writer SDK.
#[proxy(
    interface = "org.vss.WriterHost1",
    default_service = "org.vss.Vssd",
    default_path = "/org/vss/Vssd"
)]
pub trait WriterHost {
    fn register_writer(
        &self,
        name: &str,
        writer_id: &str,
        object_path: ObjectPath<'_>,
    ) -> zbus::Result<String>;
    fn unregister_writer(&self, instance_id: &str) -> zbus::Result<()>;
}

/// `org.vss.Writer1`, called by vssd on each writer.
#[proxy(interface = "org.vss.Writer1")]
pub trait Writer {
    fn identify(&self) -> zbus::Result<String>;
    fn prepare_for_backup(&self, set_id: &str, bcd: &str) -> zbus::Result<String>;
    fn prepare_for_snapshot(&self, set_id: &str, volumes: &[&str]) -> zbus::Result<()>;
    fn freeze(&self, set_id: &str) -> zbus::Result<()>;
    fn thaw(&self, set_id: &str) -> zbus::Result<()>;
    fn post_snapshot(&self, set_id: &str, bcd: &str) -> zbus::Result<String>;
    fn abort(&self, set_id: &str) -> zbus::Result<()>;
    fn backup_complete(&self, set_id: &str, bcd: &str) -> zbus::Result<String>;
    fn backup_shutdown(&self, set_id: &str) -> zbus::Result<()>;
    fn pre_restore(&self, bcd: &str) -> zbus::Result<String>;
    fn post_restore(&self, bcd: &str) -> zbus::Result<String>;
}
