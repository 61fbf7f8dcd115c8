#!/usr/bin/python3
"""A VSS writer in Python: the writer protocol is plain D-Bus (docs/DBUS.md).

It serves org.vss.Writer1, registers with vssd (org.vss.WriterHost1) and
registers again whenever org.vss.Vssd gets a new owner (vssd restarted). It
does no real work: it appends each event's name to --log, one per line, so
tests can check the order, sleeps in Freeze when asked, and vetoes one event
when asked.

    vss_writer_example.py --name NAME [--log FILE] [--freeze-sleep-ms N]
                          [--fail-at EVENT[:KIND]] [--object-path PATH]
                          [--bus-address ADDRESS]

KIND is retryable (default), nonretryable, inconsistentsnapshot,
outofresources or timeout. Needs Debian's python3-dbus and python3-gi for
the system python (hence /usr/bin/python3). Connects to the system bus
(DBUS_SYSTEM_BUS_ADDRESS is honoured) unless --bus-address is given. Runs
until SIGINT or SIGTERM, then unregisters.
"""

import argparse
import signal
import sys
import uuid

try:
    import dbus
    import dbus.bus
    import dbus.mainloop.glib
    import dbus.service
    from gi.repository import GLib
except ImportError as e:
    sys.stderr.write(
        "vss_writer_example.py: %s\n"
        "Install Debian's python3-dbus and python3-gi "
        "(apt-get install python3-dbus python3-gi) and run with /usr/bin/python3.\n" % e
    )
    sys.exit(2)

SERVICE = "org.vss.Vssd"
SERVICE_PATH = "/org/vss/Vssd"
HOST_IFACE = "org.vss.WriterHost1"
WRITER_IFACE = "org.vss.Writer1"
ERROR_PREFIX = "org.vss.Error."

# Same namespace as the Rust noop_writer example: a writer of the same name
# gets the same writer id in either language.
WRITER_ID_NAMESPACE = uuid.UUID("6d1f43a8-0c1e-4c4b-9b7e-5a3f2c10e7d2")

VETO_SYMBOLS = {
    "retryable": "VSS_E_WRITERERROR_RETRYABLE",
    "nonretryable": "VSS_E_WRITERERROR_NONRETRYABLE",
    "inconsistentsnapshot": "VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT",
    "outofresources": "VSS_E_WRITERERROR_OUTOFRESOURCES",
    "timeout": "VSS_E_WRITERERROR_TIMEOUT",
}

EVENTS = [
    "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze", "Thaw",
    "PostSnapshot", "Abort", "BackupComplete", "BackupShutdown",
    "PreRestore", "PostRestore",
]

MAX_RETRY_DELAY_MS = 30000


def braced(u):
    return "{%s}" % u


def log_err(msg):
    sys.stderr.write("vss_writer_example: %s\n" % msg)
    sys.stderr.flush()


class Writer(dbus.service.Object):
    """org.vss.Writer1. Signatures exactly as docs/DBUS.md."""

    def __init__(self, bus, path, name, writer_id, log_path, freeze_sleep_ms, fail_at):
        dbus.service.Object.__init__(self, bus, path)
        self.name = name
        self.writer_id = writer_id
        self.instance_id = braced(uuid.uuid4())
        self.log = open(log_path, "a") if log_path else None
        self.freeze_sleep_ms = freeze_sleep_ms
        self.fail_at = fail_at  # {event: symbol}

    def event(self, name):
        """Logs the event, then raises the veto if told to fail at it."""
        if self.log:
            self.log.write(name + "\n")
            self.log.flush()
        symbol = self.fail_at.get(name)
        if symbol:
            # The error name is what vssd reads; the message is shown as
            # the writer's last error.
            raise dbus.DBusException(
                "%s was told to fail at %s" % (self.name, name),
                name=ERROR_PREFIX + symbol,
            )

    @dbus.service.method(WRITER_IFACE, in_signature="", out_signature="s")
    def Identify(self):
        self.event("Identify")
        return (
            '<WRITER_METADATA xmlns="x-schema:#VssWriterMetadataInfo" version="1.0">'
            '<IDENTIFICATION writerId="%s" instanceId="%s" friendlyName="%s" '
            'usage="USER_DATA" dataSource="OTHER"/>'
            '<RESTORE_METHOD method="RESTORE_IF_CAN_REPLACE" writerRestore="NEVER" rebootRequired="no"/>'
            "<BACKUP_LOCATIONS/></WRITER_METADATA>"
            % (self.writer_id, self.instance_id, xml_escape(self.name))
        )

    @dbus.service.method(WRITER_IFACE, in_signature="ss", out_signature="s")
    def PrepareForBackup(self, set_id, bcd):
        self.event("PrepareForBackup")
        return bcd

    @dbus.service.method(WRITER_IFACE, in_signature="sas", out_signature="")
    def PrepareForSnapshot(self, set_id, volumes):
        self.event("PrepareForSnapshot")

    # Freeze answers asynchronously: the sleep is a GLib timeout, so the main
    # loop keeps dispatching calls meanwhile and an Abort gets through while
    # Freeze is still "working".
    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="",
                         async_callbacks=("reply", "error"))
    def Freeze(self, set_id, reply, error):
        try:
            self.event("Freeze")
        except dbus.DBusException as e:
            error(e)
            return
        if self.freeze_sleep_ms > 0:
            def done():
                reply()
                return False  # do not repeat the timeout
            GLib.timeout_add(self.freeze_sleep_ms, done)
        else:
            reply()

    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="")
    def Thaw(self, set_id):
        self.event("Thaw")

    @dbus.service.method(WRITER_IFACE, in_signature="ss", out_signature="s")
    def PostSnapshot(self, set_id, bcd):
        self.event("PostSnapshot")
        return bcd

    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="")
    def Abort(self, set_id):
        self.event("Abort")

    @dbus.service.method(WRITER_IFACE, in_signature="ss", out_signature="s")
    def BackupComplete(self, set_id, bcd):
        self.event("BackupComplete")
        return bcd

    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="")
    def BackupShutdown(self, set_id):
        self.event("BackupShutdown")

    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="s")
    def PreRestore(self, bcd):
        self.event("PreRestore")
        return bcd

    @dbus.service.method(WRITER_IFACE, in_signature="s", out_signature="s")
    def PostRestore(self, bcd):
        self.event("PostRestore")
        return bcd


class Registrar:
    """Keeps the writer registered with whichever vssd owns org.vss.Vssd."""

    def __init__(self, bus, name, writer_id, path):
        self.bus = bus
        self.name = name
        self.writer_id = writer_id
        self.path = path
        self.owner = ""        # unique name of the running vssd, "" if none
        self.instance_id = None
        self.attempt = 0
        self.retry_source = None

    def start(self):
        # Called at once with the current owner ("" if vssd is not running),
        # then on every change: no polling, and vssd need not run yet.
        self.bus.watch_name_owner(SERVICE, self.owner_changed)

    def owner_changed(self, owner):
        if owner == self.owner:
            if not owner:
                log_err("vssd is not running; waiting for it")
            return
        self.owner = owner
        self.instance_id = None
        self.cancel_retry()
        if owner:
            log_err("vssd appeared (%s); registering" % owner)
            self.attempt = 0
            self.register()
        else:
            log_err("vssd is not running; waiting for it")

    def cancel_retry(self):
        if self.retry_source is not None:
            GLib.source_remove(self.retry_source)
            self.retry_source = None

    def register(self):
        owner = self.owner
        self.attempt += 1

        def ok(instance_id):
            if owner == self.owner:
                self.instance_id = str(instance_id)
                log_err("registered as %s" % self.instance_id)

        def failed(e):
            if owner != self.owner:
                return
            delay = min(1000 * 2 ** (self.attempt - 1), MAX_RETRY_DELAY_MS)
            log_err("RegisterWriter failed: %s; retrying in %d ms" % (e, delay))
            self.retry_source = GLib.timeout_add(delay, self.retry)

        # Sent to vssd's unique name, so a call racing a vssd restart cannot
        # register with the new instance unnoticed.
        self.bus.call_async(
            owner, SERVICE_PATH, HOST_IFACE, "RegisterWriter", "sso",
            (self.name, self.writer_id, dbus.ObjectPath(self.path)), ok, failed)

    def retry(self):
        self.retry_source = None
        if self.owner:
            self.register()
        return False

    def unregister_then(self, then):
        """Unregisters (if registered) and calls `then` either way."""
        if not (self.owner and self.instance_id):
            then()
            return
        self.bus.call_async(
            self.owner, SERVICE_PATH, HOST_IFACE, "UnregisterWriter", "s",
            (self.instance_id,), lambda *a: then(), lambda e: then(), timeout=5.0)


def xml_escape(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;"))


def parse_fail_at(spec):
    event, _, kind = spec.partition(":")
    match = [e for e in EVENTS if e.lower() == event.lower()]
    if not match:
        raise argparse.ArgumentTypeError(
            "unknown event %r (one of %s)" % (event, ", ".join(EVENTS)))
    symbol = VETO_SYMBOLS.get((kind or "retryable").lower())
    if not symbol:
        raise argparse.ArgumentTypeError(
            "unknown kind %r (one of %s)" % (kind, ", ".join(VETO_SYMBOLS)))
    return match[0], symbol


def main():
    p = argparse.ArgumentParser(description="A VSS writer in Python (test/demo).")
    p.add_argument("--name", required=True)
    p.add_argument("--log", help="append each event's name to this file")
    p.add_argument("--freeze-sleep-ms", type=int, default=0)
    p.add_argument("--fail-at", type=parse_fail_at, action="append", default=[],
                   metavar="EVENT[:KIND]")
    p.add_argument("--object-path", default="/org/vss/Writer")
    p.add_argument("--bus-address", help="instead of the system bus")
    args = p.parse_args()

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    try:
        if args.bus_address:
            bus = dbus.bus.BusConnection(args.bus_address)
        else:
            bus = dbus.SystemBus()
    except dbus.DBusException as e:
        log_err("cannot connect to the system bus: %s\n"
                "Hint: check that dbus runs, or set DBUS_SYSTEM_BUS_ADDRESS." % e)
        return 1

    writer_id = braced(uuid.uuid5(WRITER_ID_NAMESPACE, args.name))
    Writer(bus, args.object_path, args.name, writer_id, args.log,
           args.freeze_sleep_ms, dict(args.fail_at))
    registrar = Registrar(bus, args.name, writer_id, args.object_path)
    registrar.start()
    log_err("serving %r (writer id %s) at %s" % (args.name, writer_id, args.object_path))

    loop = GLib.MainLoop()

    def on_signal():
        registrar.unregister_then(loop.quit)
        return False

    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, on_signal)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
