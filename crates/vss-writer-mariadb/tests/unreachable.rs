//! Without a server: Identify and PrepareForSnapshot fail retryably naming
//! the socket; Thaw, Abort and BackupShutdown without a Freeze are
//! harmless; PostRestore of an empty document does nothing.

use vss_types::Guid;
use vss_writer::{EventContext, VetoKind, Writer};
use vss_writer_mariadb::{MariadbWriter, MariadbWriterConfig};

fn writer(dir: &std::path::Path) -> MariadbWriter {
    MariadbWriter::new(MariadbWriterConfig {
        socket: dir.join("mysqld.sock"),
        ..MariadbWriterConfig::default()
    })
}

#[tokio::test]
async fn identify_without_a_server_is_retryable_and_names_the_socket() {
    let d = tempfile::tempdir().unwrap();
    let w = writer(d.path());
    let v = w.on_identify().await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable);
    let socket = d.path().join("mysqld.sock").display().to_string();
    assert!(v.message().contains(&socket), "{}", v.message());
    assert!(v.message().contains("unreachable"), "{}", v.message());
    assert!(
        v.hint()
            .unwrap_or_default()
            .contains("systemctl start mariadb"),
        "{:?}",
        v.hint()
    );
    // A socket file nobody listens on: refused, still retryable.
    let _l = std::os::unix::net::UnixListener::bind(d.path().join("mysqld.sock")).unwrap();
    drop(_l);
    let v = w.on_identify().await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable, "{}", v.message());
    assert!(v.message().contains(&socket), "{}", v.message());
}

#[tokio::test]
async fn prepare_without_a_server_fails_and_releases_are_harmless() {
    let d = tempfile::tempdir().unwrap();
    let w = writer(d.path());
    let ctx = EventContext::new(Guid::new_random());
    let v = w.on_prepare_snapshot(&ctx, Vec::new()).await.unwrap_err();
    assert_eq!(v.kind(), VetoKind::Retryable);
    // Nothing is held: Freeze has nothing to do, the releases are no-ops,
    // more than once.
    w.on_freeze(&ctx).await.unwrap();
    w.on_thaw(&ctx).await.unwrap();
    w.on_abort(&ctx).await.unwrap();
    w.on_abort(&ctx).await.unwrap();
    w.on_backup_shutdown(&ctx).await.unwrap();
    assert_eq!(w.on_post_restore(String::new()).await.unwrap(), "");
}
