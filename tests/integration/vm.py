#!/usr/bin/python3
"""vm.py — run the test guest (tests/guest/) under QEMU and talk to it.

A module (stdlib only) and a CLI for shell tests.  Each VM lives in a
directory of its own, DIR:

    vm.py start --dir DIR --guest GUESTDIR [--append OPTS] [--mem MB]
                [--timeout SECS] [--owner PID] [-- QEMU-ARGS...]
        Boot the guest (GUESTDIR/vmlinuz, GUESTDIR/initramfs.gz, as built by
        tests/guest/build-guest.sh) and return once it is ready for commands.
        QEMU-ARGS go to QEMU as they are (disks: -blockdev/-device).  --owner
        PID: power the VM off hard if that process goes away (pass the test
        shell's $$), so a test killed with SIGKILL leaves no QEMU behind.
    vm.py run --dir DIR [--timeout SECS] [COMMAND...]
        Run a shell command in the guest (the words joined by spaces, like
        ssh; no words: the script on stdin).  Prints its output (stderr
        merged into stdout) and exits with its status.
    vm.py stop --dir DIR [--timeout SECS]
        sync and power the guest off (its init unmounts the disks), wait for
        QEMU to exit.  If the guest does not power off in time, QEMU is
        quit through QMP (then killed) and stop exits 1.  Nothing running:
        exits 0.
    vm.py kill --dir DIR
        SIGKILL QEMU and the relay by PID, now (cleanup after a failure).
    vm.py status --dir DIR
        Prints ready, booting or "stopped: REASON"; exits 0 only if ready.
    vm.py qmp --dir DIR [--wait-event NAME [--match KEY=VALUE]...]
              [--timeout SECS] COMMAND [ARGUMENTS-JSON]
        Execute one QMP command; print its return value as JSON.  With
        --wait-event, also wait for that event (its data matching every
        KEY=VALUE) on the same connection and print it.
    vm.py attach --dir DIR --id ID --nbd HOST:PORT|unix:PATH --export NAME
                 [--serial SERIAL] [--read-only]
        Hot-plug an NBD export as a virtio-blk disk (blockdev-add with the
        nbd driver, node-name ID; device_add virtio-blk-pci, id ID).
    vm.py detach --dir DIR --id ID [--timeout SECS]
        device_del ID, wait for QEMU's DEVICE_DELETED (the guest honoured the
        ACPI eject), then blockdev-del ID.

Exit status: a command's own status for run; 124 when vm.py timed out;
125 when vm.py itself failed (no VM, QEMU died, bad arguments): the reason
is on stderr.

Files in DIR: qemu.pid, relay.pid, serial.log (everything the guest printed
on its console, across boots), qemu.log (QEMU's own stdout/stderr),
relay.log, qemu.cmdline, ready (present once booted), exited (why QEMU
ended), and the sockets serial.sock, ctl.sock, qmp.sock.

How it works: `start` forks a relay daemon that owns QEMU (its child).  QEMU
connects its serial port (a unix socket chardev) to the relay, which logs
every byte and copies it to the clients on ctl.sock; a client's complete
lines go to the guest's serial port.  In the guest, /sbin/vm-agent
(tests/guest/vm-agent) reads "@run NONCE BASE64" lines and frames each
command's output with markers carrying NONCE.  Environment:
BLOCKD_QEMU (default qemu-system-x86_64), BLOCKD_QEMU_ACCEL (default tcg).
"""

import argparse
import base64
import errno
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time

READY = b"blockd-guest: ready"
FATAL = b"blockd-guest: FATAL"
EXIT_TIMEOUT = 124
EXIT_VM = 125
CMDLINE = "console=ttyS0 quiet panic=-1"


class VmError(Exception):
    """vm.py cannot do what was asked (exit 125); the message says why."""


class VmTimeout(VmError):
    """A wait ran out of time (exit 124)."""


def _path(d, name):
    return os.path.join(d, name)


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail(path, n=30, since=0):
    """The last n lines of path, from byte offset since on."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    st = _read("/proc/%d/stat" % pid, "")
    return not (st and st.rsplit(")", 1)[-1].split()[0] == "Z")


def _pid_of(d, which):
    """The PID in DIR/qemu.pid or relay.pid if that process is still ours
    (QEMU: its command line names DIR; relay: its cwd is DIR), else None:
    a stale file never gets an unrelated process killed."""
    s = _read(_path(d, which + ".pid"))
    if not s or not s.isdigit():
        return None
    pid = int(s)
    if not _alive(pid):
        return None
    try:
        if which == "qemu":
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                ours = os.fsencode(d) in f.read()
        else:
            ours = os.readlink("/proc/%d/cwd" % pid) == d
    except OSError:
        return None
    return pid if ours else None


# ---- the relay daemon -----------------------------------------------------

class _Relay:
    """Owns QEMU: logs its serial output, serves ctl.sock, records its end."""

    def __init__(self, d, argv, cwd, owner):
        self.d, self.argv, self.cwd, self.owner = d, argv, cwd, owner
        self.sel = selectors.DefaultSelector()
        self.serial = None          # the connection from QEMU's chardev
        self.to_guest = bytearray()
        self.clients = {}           # socket -> [inbuf, outbuf]
        self.scan = b""             # the serial stream's tail, for markers
        self.qemu = None
        self.why = None             # set when the relay decides to end QEMU
        self.stopping = False

    def log(self, msg):
        sys.stderr.write("%s vm.py relay: %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    def listen(self, name, backlog):
        path = _path(self.d, name)
        _unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(backlog)
        s.setblocking(False)
        return s

    def run(self):
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_signal)
        self.seriallog = open(_path(self.d, "serial.log"), "ab", buffering=0)
        self.seriallog.write(b"\n==== vm.py start %s ====\n" % time.strftime("%Y-%m-%d %H:%M:%S").encode())
        self.serial_l = self.listen("serial.sock", 1)
        self.ctl_l = self.listen("ctl.sock", 16)
        self.sel.register(self.serial_l, selectors.EVENT_READ, "serial-listen")
        self.sel.register(self.ctl_l, selectors.EVENT_READ, "ctl-listen")
        with open(_path(self.d, "qemu.log"), "ab") as qlog:
            qlog.write(b"==== vm.py start %s: %s\n" % (time.strftime("%H:%M:%S").encode(),
                                                        " ".join(self.argv).encode()))
            qlog.flush()
            self.qemu = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=qlog,
                                         stderr=subprocess.STDOUT, cwd=self.cwd, close_fds=True)
        _write_atomic(_path(self.d, "qemu.pid"), "%d\n" % self.qemu.pid)
        self.log("QEMU pid %d: %s" % (self.qemu.pid, " ".join(self.argv)))
        last_owner_check = 0.0
        while True:
            for key, mask in self.sel.select(timeout=0.2):
                self.dispatch(key, mask)
            rc = self.qemu.poll()
            if rc is not None:
                self.drain_serial()
                self.finish(rc)
                return
            now = time.monotonic()
            if self.owner and now - last_owner_check > 1.0 and not self.stopping:
                last_owner_check = now
                if not _alive(self.owner):
                    self.end_qemu("the owner process %d went away" % self.owner)

    def on_signal(self, signum, frame):
        if not self.stopping:
            self.end_qemu("the relay got signal %d" % signum)

    def end_qemu(self, why):
        """SIGTERM QEMU (it closes its disks cleanly), SIGKILL after 10 s."""
        self.why, self.stopping = why, True
        self.log("ending QEMU: " + why)
        if self.qemu is None:
            raise SystemExit(1)
        try:
            self.qemu.terminate()
            try:
                self.qemu.wait(10)
            except subprocess.TimeoutExpired:
                self.log("QEMU ignored SIGTERM for 10 s: SIGKILL")
                self.qemu.kill()
        except OSError:
            pass

    def dispatch(self, key, mask):
        what = key.data
        if what == "serial-listen":
            conn, _ = self.serial_l.accept()
            if self.serial is not None:      # only QEMU connects here
                conn.close()
                return
            conn.setblocking(False)
            self.serial = conn
            self.sel.register(conn, selectors.EVENT_READ, "serial")
            self.log("QEMU's serial port connected")
        elif what == "ctl-listen":
            conn, _ = self.ctl_l.accept()
            conn.setblocking(False)
            self.clients[conn] = [bytearray(), bytearray()]
            self.sel.register(conn, selectors.EVENT_READ, "client")
        elif what == "serial":
            if mask & selectors.EVENT_READ:
                self.read_serial()
            if self.serial is not None and mask & selectors.EVENT_WRITE:
                self.write_serial()
        elif what == "client":
            conn = key.fileobj
            if mask & selectors.EVENT_READ:
                self.read_client(conn)
            if conn in self.clients and mask & selectors.EVENT_WRITE:
                self.flush_client(conn)

    def read_serial(self):
        try:
            data = self.serial.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.log("QEMU closed the serial port")
            self.sel.unregister(self.serial)
            self.serial.close()
            self.serial = None
            return
        self.seriallog.write(data)
        scan = self.scan + data
        i = scan.find(READY)
        if i >= 0:
            j = scan.find(b"\n", i)
            if j >= 0:
                line = scan[i:j].decode("utf-8", "replace").strip()
                _write_atomic(_path(self.d, "ready"), line + "\n")
                self.log("guest ready: " + line)
                scan = scan[j:]
        i = scan.find(FATAL)
        if i >= 0:
            j = scan.find(b"\n", i)
            if j >= 0:
                self.log("guest: " + scan[i:j].decode("utf-8", "replace"))
                scan = scan[j:]
        self.scan = scan[-4096:]
        for conn, (_, out) in list(self.clients.items()):
            out += data
            if len(out) > (64 << 20):
                self.log("dropping a client that reads nothing")
                self.drop_client(conn)
                continue
            self.flush_client(conn)

    def drain_serial(self):
        """After QEMU exited: log what is left in the socket."""
        while self.serial is not None:
            try:
                self.serial.setblocking(True)
                self.serial.settimeout(0.5)
                self.read_serial()
            except OSError:
                break

    def write_serial(self):
        if self.to_guest:
            try:
                n = self.serial.send(self.to_guest)
                del self.to_guest[:n]
            except BlockingIOError:
                pass
            except OSError:
                self.to_guest.clear()
        self.sel.modify(self.serial, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.to_guest else 0),
                        "serial")

    def read_client(self, conn):
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop_client(conn)
            return
        inbuf = self.clients[conn][0]
        inbuf += data
        # whole lines only, so that two clients' commands never interleave
        j = inbuf.rfind(b"\n")
        if j >= 0:
            if self.serial is not None:
                self.to_guest += inbuf[:j + 1]
                self.write_serial()
            del inbuf[:j + 1]
        if len(inbuf) > (16 << 20):
            self.drop_client(conn)

    def flush_client(self, conn):
        out = self.clients[conn][1]
        try:
            if out:
                n = conn.send(out)
                del out[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.drop_client(conn)
            return
        self.sel.modify(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0), "client")

    def drop_client(self, conn):
        self.clients.pop(conn, None)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def finish(self, rc):
        """QEMU is gone: say why in DIR/exited first (clients that see their
        connection close read it), then let the clients go."""
        if rc < 0:
            how = "killed by signal %d" % -rc
        else:
            how = "exited with status %d" % rc
        why = "QEMU %s%s" % (how, " (%s)" % self.why if self.why else "")
        self.log(why)
        self.seriallog.write(b"\n==== vm.py: %s ====\n" % why.encode())
        _write_atomic(_path(self.d, "exited"), why + "\n")
        _unlink(_path(self.d, "ready"))
        if _read(_path(self.d, "qemu.pid")) == str(self.qemu.pid):
            _unlink(_path(self.d, "qemu.pid"))
        for conn in list(self.clients):
            try:
                conn.setblocking(True)
                conn.settimeout(1)
                conn.sendall(self.clients[conn][1])
            except OSError:
                pass
            self.drop_client(conn)
        for name in ("serial.sock", "ctl.sock"):
            _unlink(_path(self.d, name))
        if _read(_path(self.d, "relay.pid")) == str(os.getpid()):
            _unlink(_path(self.d, "relay.pid"))


def _daemonize_relay(d, argv, owner):
    """Fork the relay (double fork, own session, stdio to DIR/relay.log) and
    return in the caller.  The relay's cwd is DIR: that is how `kill` knows
    a PID in relay.pid is still ours."""
    cwd = os.getcwd()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir(d)
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        fd = os.open(_path(d, "relay.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.closerange(3, 1024)      # nothing of the caller's stays open here
        sys.stdout = sys.stderr = os.fdopen(2, "w", buffering=1)
        _write_atomic(_path(d, "relay.pid"), "%d\n" % os.getpid())
        relay = _Relay(d, argv, cwd, owner)
        try:
            relay.run()
        except BaseException as e:
            relay.log("relay failed: %r" % (e,))
            if relay.qemu and relay.qemu.poll() is None:
                relay.qemu.kill()
                relay.qemu.wait()
            _write_atomic(_path(d, "exited"), "the relay failed: %r\n" % (e,))
            _unlink(_path(d, "qemu.pid"))
            _unlink(_path(d, "relay.pid"))
    finally:
        os._exit(0)


# ---- the VM, as the CLI and Python tests use it ----------------------------

class Vm:
    """A VM in directory d (created by start; any later process can attach
    to it by constructing Vm(d))."""

    def __init__(self, d):
        self.d = os.path.realpath(d)

    def p(self, name):
        return _path(self.d, name)

    # -- lifecycle

    def start(self, guest=None, kernel=None, initrd=None, append="", mem=256,
              timeout=120.0, owner=None, qemu_args=()):
        """Boot; returns the ready line ("blockd-guest: ready root=...")."""
        os.makedirs(self.d, exist_ok=True)
        if _pid_of(self.d, "qemu") or _pid_of(self.d, "relay"):
            raise VmError("start: a VM is already running here (vm.py stop or kill first)")
        kernel = kernel or (guest and os.path.join(guest, "vmlinuz"))
        initrd = initrd or (guest and os.path.join(guest, "initramfs.gz"))
        if not kernel or not initrd:
            raise VmError("start: give --guest GUESTDIR (or --kernel and --initrd)")
        for f in (kernel, initrd):
            if not os.path.isfile(f):
                raise VmError("start: %s does not exist (run tests/guest/build-guest.sh)" % f)
        for name in ("qmp.sock", "serial.sock", "ctl.sock"):
            if len(os.fsencode(self.p(name))) > 107:
                raise VmError("start: %s is too long for a unix socket (107 bytes at most): "
                              "use a shorter --dir" % self.p(name))
        for name in ("ready", "exited", "qemu.pid", "relay.pid", "qmp.sock"):
            _unlink(self.p(name))
        qemu = os.environ.get("BLOCKD_QEMU", "qemu-system-x86_64")
        accel = os.environ.get("BLOCKD_QEMU_ACCEL", "tcg")
        argv = [qemu, "-accel", accel, "-m", str(mem), "-nodefaults", "-display", "none",
                "-no-reboot",
                "-kernel", os.path.abspath(kernel), "-initrd", os.path.abspath(initrd),
                "-append", (CMDLINE + " " + append).strip(),
                "-chardev", "socket,id=ser0,path=%s" % self.p("serial.sock"),
                "-serial", "chardev:ser0",
                "-qmp", "unix:%s,server=on,wait=off" % self.p("qmp.sock")] + list(qemu_args)
        with open(self.p("qemu.cmdline"), "w") as f:
            f.write(" ".join(_shell_quote(a) for a in argv) + "\n")
        self.log_offsets = {n: _size(self.p(n)) for n in ("qemu.log", "serial.log")}
        t0 = time.monotonic()
        _daemonize_relay(self.d, argv, owner)
        deadline = t0 + timeout
        while True:
            ready = _read(self.p("ready"))
            if ready:
                return ready
            why = _read(self.p("exited"))
            if why is None and time.monotonic() > t0 + 5 and not _pid_of(self.d, "relay"):
                why = "the relay died (see %s)" % self.p("relay.log")
            if why is not None:
                raise VmError("start: the guest did not boot: %s\n%s" % (why, self.diagnostics()))
            if time.monotonic() > deadline:
                diag = self.diagnostics()
                self.kill()
                raise VmTimeout("start: the guest was not ready after %.0f s; killed it\n%s"
                                % (timeout, diag))
            time.sleep(0.1)

    def diagnostics(self):
        """The ends of QEMU's log and of the serial console, for a failure."""
        offsets = getattr(self, "log_offsets", {})
        return ("--- %s (last lines)\n%s\n--- %s (last lines)\n%s"
                % (self.p("qemu.log"), _tail(self.p("qemu.log"), 15, offsets.get("qemu.log", 0)),
                   self.p("serial.log"), _tail(self.p("serial.log"), 30, offsets.get("serial.log", 0))))

    def running(self):
        return _pid_of(self.d, "qemu") is not None

    def status(self):
        if self.running():
            return "ready" if os.path.exists(self.p("ready")) else "booting"
        return "stopped: %s" % (_read(self.p("exited")) or "not running")

    def wait_exit(self, timeout):
        """True once QEMU and the relay are gone."""
        deadline = time.monotonic() + timeout
        while _pid_of(self.d, "qemu") or _pid_of(self.d, "relay"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self, timeout=60.0):
        """Power off from inside the guest.  Returns True if it did; False if
        QEMU had to be quit or killed.  True when nothing was running."""
        if not self.running():
            return self.wait_exit(5)
        if os.path.exists(self.p("ready")):
            try:
                self._send_line(b"@run %s %s\n" % (secrets.token_hex(8).encode(),
                                                   base64.b64encode(b"sync; poweroff")))
                if self.wait_exit(timeout):
                    return True
                sys.stderr.write("vm.py: %s: stop: the guest did not power off within %.0f s; "
                                 "quitting QEMU\n" % (self.d, timeout))
            except VmError as e:
                sys.stderr.write("vm.py: %s: stop: %s\n" % (self.d, e))
        try:
            self.qmp("quit", timeout=5)
        except VmError:
            pass
        if not self.wait_exit(10):
            self.kill()
        return False

    def kill(self):
        """SIGKILL QEMU and the relay; wait for them to go."""
        for which in ("qemu", "relay"):
            pid = _pid_of(self.d, which)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if which == "qemu" and pid:
                # the relay notices, writes DIR/exited and leaves by itself
                deadline = time.monotonic() + 3
                while _pid_of(self.d, "relay") and time.monotonic() < deadline:
                    time.sleep(0.05)
        self.wait_exit(10)

    # -- the command channel

    def _connect_ctl(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.p("ctl.sock"))
        except OSError as e:
            s.close()
            raise VmError("no VM is running here (%s; %s)" % (e.strerror, self.status()))
        return s

    def _send_line(self, line):
        s = self._connect_ctl()
        try:
            s.sendall(line)
            time.sleep(0.05)
        finally:
            s.close()

    def run(self, script, timeout=600.0):
        """Run script (str or bytes) with sh -c in the guest.  Returns
        (status, output bytes); raises VmTimeout / VmError."""
        if isinstance(script, str):
            script = script.encode()
        if not os.path.exists(self.p("ready")):
            raise VmError("run: the guest is not ready (%s)" % self.status())
        nonce = secrets.token_hex(8).encode()
        begin = b"@@blockd-begin " + nonce + b"@@\n"
        end = b"@@blockd-end " + nonce + b" "
        s = self._connect_ctl()
        buf = bytearray()
        deadline = time.monotonic() + timeout
        try:
            s.sendall(b"@run " + nonce + b" " + base64.b64encode(script) + b"\n")
            start = -1
            while True:
                if start < 0:
                    i = buf.find(begin)
                    if i >= 0:
                        start = i + len(begin)
                if start >= 0:
                    i = buf.find(end, start)
                    if i >= 0:
                        j = buf.find(b"@@", i + len(end))
                        if j >= 0:
                            return int(buf[i + len(end):j]), bytes(buf[start:i])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VmTimeout("run: no end of the command after %.0f s (it goes on in the "
                                    "guest); output so far:\n%s"
                                    % (timeout, bytes(buf[max(start, 0):]).decode("utf-8", "replace")))
                s.settimeout(min(left, 1.0))
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    raise VmError("run: the VM went away during the command (%s); output so far:\n%s"
                                  % (self.status(), bytes(buf[max(start, 0):]).decode("utf-8", "replace")))
                buf += data
        finally:
            s.close()

    # -- QMP

    def qmp(self, command, arguments=None, wait_event=None, match=None, timeout=30.0):
        """Execute a QMP command; returns (return value, event or None).
        With wait_event, waits on the same connection for that event whose
        data has every key/value of match (values compared as strings)."""
        deadline = time.monotonic() + timeout
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                s.connect(self.p("qmp.sock"))
                break
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED) or not self.running() \
                        or time.monotonic() > deadline:
                    s.close()
                    raise VmError("qmp: cannot connect to %s: %s (%s)"
                                  % (self.p("qmp.sock"), e.strerror, self.status()))
                time.sleep(0.1)
        f = s.makefile("rwb")
        events = []

        def recv():
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VmTimeout("qmp %s: no answer within %.0f s" % (command, timeout))
                s.settimeout(left)
                try:
                    line = f.readline()
                except socket.timeout:
                    raise VmTimeout("qmp %s: no answer within %.0f s" % (command, timeout))
                if not line:
                    raise VmError("qmp %s: QEMU closed the connection (%s)" % (command, self.status()))
                return json.loads(line)

        def execute(cmd, args, ident):
            req = {"execute": cmd, "id": ident}
            if args is not None:
                req["arguments"] = args
            f.write(json.dumps(req).encode() + b"\n")
            f.flush()
            while True:
                msg = recv()
                if "event" in msg:
                    events.append(msg)
                    continue
                if msg.get("id") != ident:
                    continue
                if "error" in msg:
                    raise VmError("qmp %s: %s: %s" % (cmd, msg["error"].get("class"),
                                                      msg["error"].get("desc")))
                return msg.get("return")

        def matches(ev):
            if ev.get("event") != wait_event:
                return False
            data = ev.get("data", {})
            return all(k in data and str(data[k]) == str(v) for k, v in (match or {}).items())

        try:
            greeting = recv()
            if "QMP" not in greeting:
                raise VmError("qmp: unexpected greeting %r" % greeting)
            execute("qmp_capabilities", None, "caps")
            ret = execute(command, arguments, "cmd")
            if not wait_event:
                return ret, None
            while True:
                for ev in events:
                    if matches(ev):
                        return ret, ev
                events.clear()
                try:
                    msg = recv()
                except VmTimeout:
                    raise VmTimeout("qmp %s: no %s event%s within %.0f s"
                                    % (command, wait_event,
                                       " with " + json.dumps(match) if match else "", timeout))
                if "event" in msg:
                    events.append(msg)
        finally:
            f.close()
            s.close()

    def attach(self, ident, nbd, export, serial=None, read_only=False, timeout=30.0):
        """blockdev-add (nbd driver, node-name ident) + device_add
        virtio-blk-pci (id ident); undoes the blockdev-add if device_add fails."""
        if nbd.startswith("unix:"):
            server = {"type": "unix", "path": nbd[5:]}
        else:
            host, _, port = nbd.rpartition(":")
            if not host or not port:
                raise VmError("attach: --nbd must be HOST:PORT or unix:PATH, not %r" % nbd)
            server = {"type": "inet", "host": host, "port": port}
        node = {"driver": "nbd", "node-name": ident, "server": server, "export": export,
                "read-only": read_only}
        if not read_only:
            node["discard"] = "unmap"      # as blockctl attaches: the guest's discards reach blockd
        self.qmp("blockdev-add", node, timeout=timeout)
        dev = {"driver": "virtio-blk-pci", "id": ident, "drive": ident}
        if serial:
            dev["serial"] = serial
        try:
            self.qmp("device_add", dev, timeout=timeout)
        except VmError:
            try:
                self.qmp("blockdev-del", {"node-name": ident}, timeout=timeout)
            except VmError:
                pass
            raise

    def detach(self, ident, timeout=60.0):
        """device_del, wait for DEVICE_DELETED, blockdev-del."""
        self.qmp("device_del", {"id": ident}, wait_event="DEVICE_DELETED",
                 match={"device": ident}, timeout=timeout)
        self.qmp("blockdev-del", {"node-name": ident}, timeout=timeout)


def _shell_quote(a):
    if a and all(c.isalnum() or c in "-_./=:,@+%" for c in a):
        return a
    return "'" + a.replace("'", "'\\''") + "'"


# ---- CLI ------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="vm.py", description="Run the blockd test guest under QEMU.",
                                 epilog="See the top of this file for details.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", required=True, help="the VM's directory")
        return p

    p = add("start", "boot the guest, return when it is ready")
    p.add_argument("--guest", default=os.environ.get("BLOCKD_GUEST_DIR"),
                   help="directory with vmlinuz and initramfs.gz (default $BLOCKD_GUEST_DIR)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--append", default="", help="more kernel command line (e.g. blockd.root=SERIAL)")
    p.add_argument("--mem", type=int, default=256, help="MiB (default 256)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for ready (default 120)")
    p.add_argument("--owner", type=int, help="kill the VM when this PID exits")
    p.add_argument("qemu_args", nargs="*", help="after --: passed to QEMU")
    p = add("run", "run a command in the guest, exit with its status")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = add("stop", "power the guest off cleanly")
    p.add_argument("--timeout", type=float, default=60)
    add("kill", "SIGKILL QEMU and the relay")
    add("status", "ready, booting, or stopped: REASON")
    p = add("qmp", "execute a QMP command")
    p.add_argument("--wait-event")
    p.add_argument("--match", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("execute")
    p.add_argument("arguments", nargs="?")
    p = add("attach", "hot-plug an NBD export as a virtio-blk disk")
    p.add_argument("--id", required=True)
    p.add_argument("--nbd", required=True, help="HOST:PORT or unix:PATH")
    p.add_argument("--export", required=True)
    p.add_argument("--serial")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    p = add("detach", "unplug a disk (device_del, DEVICE_DELETED, blockdev-del)")
    p.add_argument("--id", required=True)
    p.add_argument("--timeout", type=float, default=60)

    args = ap.parse_args(argv)
    vm = Vm(args.dir)
    try:
        if args.cmd == "start":
            t0 = time.monotonic()
            line = vm.start(guest=args.guest, kernel=args.kernel, initrd=args.initrd,
                            append=args.append, mem=args.mem, timeout=args.timeout,
                            owner=args.owner, qemu_args=args.qemu_args)
            print("vm.py: %s: %s (%.1f s)" % (vm.d, line, time.monotonic() - t0))
            return 0
        if args.cmd == "run":
            cmd = args.command
            if cmd and cmd[0] == "--":
                cmd = cmd[1:]
            script = " ".join(cmd).encode() if cmd else sys.stdin.buffer.read()
            try:
                rc, out = vm.run(script, timeout=args.timeout)
            finally:
                sys.stdout.flush()
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
            return rc
        if args.cmd == "stop":
            return 0 if vm.stop(timeout=args.timeout) else 1
        if args.cmd == "kill":
            vm.kill()
            return 0
        if args.cmd == "status":
            st = vm.status()
            print(st)
            return 0 if st == "ready" else 1
        if args.cmd == "qmp":
            arguments = json.loads(args.arguments) if args.arguments else None
            match = {}
            for m in args.match:
                k, sep, v = m.partition("=")
                if not sep:
                    raise VmError("qmp: --match takes KEY=VALUE, not %r" % m)
                match[k] = v
            ret, ev = vm.qmp(args.execute, arguments, wait_event=args.wait_event, match=match,
                             timeout=args.timeout)
            print(json.dumps(ret))
            if ev is not None:
                print(json.dumps(ev))
            return 0
        if args.cmd == "attach":
            vm.attach(args.id, args.nbd, args.export, serial=args.serial,
                      read_only=args.read_only, timeout=args.timeout)
            return 0
        if args.cmd == "detach":
            vm.detach(args.id, timeout=args.timeout)
            return 0
    except VmTimeout as e:
        sys.stderr.write("vm.py: %s: %s\n" % (vm.d, e))
        return EXIT_TIMEOUT
    except VmError as e:
        sys.stderr.write("vm.py: %s: %s\n" % (vm.d, e))
        return EXIT_VM
    except json.JSONDecodeError as e:
        sys.stderr.write("vm.py: bad JSON: %s\n" % e)
        return EXIT_VM
    return EXIT_VM


if __name__ == "__main__":
    sys.exit(main())
