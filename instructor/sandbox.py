"""The grading sandbox: one submission's cells run by ``instructor/runner.py`` in a bubblewrap
container, with limits. Nothing here runs student code in this process.

Why bubblewrap: it is one small Debian package (``bubblewrap``), works as root (CI) and, where
user namespaces are allowed, without it, and gives in one command what grading needs: an
empty mount namespace into which only the system's read-only folders, the Python environment,
``course_lib``, the runner, the job and that student's temporary copy are mounted (so the
gradebook, the source notebooks, ``_grading/`` and the other students' files do not exist
inside), no network (``--unshare-net``: only a loopback), its own PID namespace (killing the
sandbox kills every process the student started), an unprivileged uid (65534) with no
capabilities, and a new session (no terminal injection). A separate unprivileged user alone
would leave the network and every world-readable file reachable; ``unshare`` alone does not
build a fresh root.

Limits: wall clock per cell (soft, SIGALRM in the runner; hard a few seconds later: SIGKILL to
the sandbox, which also ends a loop that ignores SIGINT) and per notebook (hard); memory with
a cgroup v1 memory controller where this process may create one (root on Debian), else
``RLIMIT_DATA`` (also where only cgroup v2 is mounted); process count with the v1 pids controller
where available; file size with ``RLIMIT_FSIZE``;
printed output is capped by the runner and descriptors 1 and 2 go to /dev/null.

Where bubblewrap is missing or cannot create namespaces, :func:`available` says why and the
grader runs the runner as a plain subprocess with the same limits, after a loud warning:
then student code can read what this user can read and reach the network.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
NOBODY = 65534
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")


@dataclass
class Limits:
    """The limits of one notebook's run.

    Their values are written in ONE place, the course's ``nbgrader_config.py``
    (``c.Execute.timeout`` and the ``c.Sandbox`` section); :meth:`from_config` reads them, and
    the command line's options override them for one run. There are no defaults here.

    Parameters
    ----------
    cell_timeout : float
        Seconds per cell (soft: the cell is interrupted and the next one runs).
    notebook_timeout : float
        Seconds for the whole notebook (hard: the sandbox is killed).
    memory_mb : int
        Memory per notebook, in MB.
    max_file_mb : int
        The largest file the student's code may write, in MB.
    max_pids : int
        Processes per notebook.
    grace : float
        Seconds after a cell's soft limit before the sandbox is killed.
    threads : int
        BLAS and TensorFlow threads in the sandbox (the grader sets it from its workers).
    """

    cell_timeout: float
    notebook_timeout: float
    memory_mb: int
    max_file_mb: int
    max_pids: int
    grace: float
    threads: int = 1

    # (field, config section, config key, type): where each limit is written
    SETTINGS = (("cell_timeout", "Execute", "timeout", float),
                ("notebook_timeout", "Sandbox", "notebook_timeout", float),
                ("memory_mb", "Sandbox", "memory_mb", int),
                ("max_file_mb", "Sandbox", "max_file_mb", int),
                ("max_pids", "Sandbox", "max_pids", int),
                ("grace", "Sandbox", "kill_grace", float))

    @classmethod
    def from_config(cls, config, **overrides):
        """The limits the course's configuration sets, with ``overrides`` (None: not given).

        Parameters
        ----------
        config : traitlets.config.Config
            The loaded ``nbgrader_config.py`` (``Course.config``).
        **overrides
            Fields to set instead of the configured value; a value of None is ignored.

        Raises
        ------
        ValueError
            If a limit is missing from the configuration, an override names no limit, or a
            value is not a positive number; the message names the setting and its value.
        """
        fields = {name for name, *_ in cls.SETTINGS}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"no such limit: {unknown[0]!r} (the limits are "
                             f"{', '.join(sorted(fields))})")
        values = {}
        for name, section, key, kind in cls.SETTINGS:
            value = overrides.get(name)
            where = name if value is not None else f"c.{section}.{key} in nbgrader_config.py"
            if value is None:
                if section not in config or key not in config[section]:
                    raise ValueError(f"{where} is not set: the grading limits are configured "
                                     "there (see the course's nbgrader_config.py)")
                value = config[section][key]
            try:
                number = kind(value)
            except (TypeError, ValueError):
                number = None
            if number is None or isinstance(value, bool) or not number > 0:
                raise ValueError(f"{where} = {value!r}: a positive number is needed")
            values[name] = number
        return cls(**values)


@dataclass
class Outcome:
    """What came back from one run: the runner's (untrusted) status lines and how it ended."""

    statuses: list = field(default_factory=list)
    returncode: int = None
    killed: str = ""  # "" | "cell timeout" | "notebook timeout" | "memory"
    seconds: float = 0.0
    peak_memory: int = 0  # bytes, from the cgroup (0 if unknown)
    isolated: bool = True


_PROBE = None


def available():
    """(True, "") if bubblewrap sandboxes work here, else (False, why). Cached."""
    global _PROBE
    if _PROBE is None:
        bwrap = shutil.which("bwrap")
        if not bwrap:
            _PROBE = (False, "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` "
                             "(make autograde installs it when run as root)")
        else:
            cmd = [bwrap, *_mounts(), "--unshare-all", "--die-with-parent", *_user_args(bwrap),
                   "--cap-drop", "ALL", "/bin/true"]
            result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            _PROBE = (True, "") if result.returncode == 0 else \
                (False, f"bubblewrap cannot create a sandbox here: {result.stdout.strip()[:300]}")
    return _PROBE


_USERNS = None


def _user_args(bwrap):
    """Run as uid/gid 65534 in a user namespace where that works, else as this user."""
    global _USERNS
    if _USERNS is None:
        result = subprocess.run([bwrap, *_mounts(), "--unshare-user", "--uid", str(NOBODY),
                                 "--gid", str(NOBODY), "/bin/true"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _USERNS = result.returncode == 0
    return ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)] if _USERNS else []


def _mounts():
    args = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _python_paths():
    """Folders the interpreter needs: its installation, the virtual environment, course_lib
    and coursework (the grade cells' checks)."""
    import course_lib
    import coursework

    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix,
             os.path.dirname(os.path.realpath(course_lib.__file__)),
             os.path.dirname(os.path.realpath(coursework.__file__))}
    exe = os.path.realpath(sys.executable)
    paths.add(os.path.dirname(os.path.dirname(exe)))
    return sorted(p for p in paths if not any(p.startswith(s + "/") for s in _SYSTEM))


def _parents(path):
    out, head = [], os.path.dirname(path)
    while head and head != "/":
        out.append(head)
        head = os.path.dirname(head)
    return out[::-1]


def bwrap_command(job_dir, work_dir, out_dir, env):
    """The bubblewrap command line: what exists inside the sandbox, and nothing else."""
    bwrap = shutil.which("bwrap")
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           *_user_args(bwrap), "--hostname", "grader", *_mounts(),
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/home",
           "--tmpfs", "/var", "--tmpfs", "/run"]
    made = set()
    for path in _python_paths():
        for parent in _parents(path):
            if parent not in made and not any(parent == s or parent.startswith(s + "/")
                                              for s in _SYSTEM + ("/tmp", "/home", "/var", "/run")):
                cmd += ["--dir", parent]
                made.add(parent)
        cmd += ["--ro-bind", path, path]
    cmd += ["--ro-bind", RUNNER, "/grader/runner.py", "--ro-bind", job_dir, "/grader/job",
            "--bind", out_dir, "/grader/out", "--bind", work_dir, "/home/student/work",
            "--chdir", "/home/student/work", "--clearenv"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + [sys.executable, "-I", "/grader/runner.py", "/grader/job/job.json"]


# ---------------------------------------------------------------------------------------------
# cgroups: memory and process limits


def _cgroup_base(controller):
    """A folder under which this process may create cgroups for ``controller``, or None."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            for base in (f"/sys/fs/cgroup/{controller}{path}", f"/sys/fs/cgroup/{controller}"):
                if os.path.isdir(base) and os.access(base, os.W_OK):
                    return base
    return None


class Cgroups:
    """Memory (and pids) cgroups v1 for one run, where they can be created; else nothing."""

    def __init__(self, limits):
        self.paths = {}
        name = f"course-grader-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for controller, settings in (
                ("memory", {"memory.limit_in_bytes": limits.memory_mb * 2**20,
                            "memory.memsw.limit_in_bytes": limits.memory_mb * 2**20,
                            "memory.swappiness": 0}),
                ("pids", {"pids.max": limits.max_pids})):
            base = _cgroup_base(controller)
            if base is None:
                continue
            path = os.path.join(base, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            self.paths[controller] = path
            for key, value in settings.items():
                try:
                    with open(os.path.join(path, key), "w") as fh:
                        fh.write(str(value))
                except OSError:
                    pass

    @property
    def memory(self):
        return "memory" in self.paths

    @staticmethod
    def sweep():
        """Remove the empty cgroups of graders that were killed (their pid is gone)."""
        for controller in ("memory", "pids"):
            base = _cgroup_base(controller)
            if base is None:
                continue
            for name in os.listdir(base):
                parts = name.split("-")
                if name.startswith("course-grader-") and len(parts) == 4 and parts[2].isdigit() \
                        and not os.path.exists(f"/proc/{parts[2]}"):
                    try:
                        os.rmdir(os.path.join(base, name))
                    except OSError:
                        pass

    def join(self):
        """In the child, before exec: move into the cgroups."""
        for path in self.paths.values():
            with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))

    def _read(self, controller, key):
        try:
            with open(os.path.join(self.paths[controller], key)) as fh:
                return fh.read()
        except (OSError, KeyError):
            return ""

    def peak(self):
        text = self._read("memory", "memory.max_usage_in_bytes").strip()
        return int(text) if text.isdigit() else 0

    def oom(self):
        for line in self._read("memory", "memory.oom_control").splitlines():
            if line.startswith("oom_kill ") and line.split()[1] != "0":
                return True
        return False

    def kill_all(self):
        for path in self.paths.values():
            try:
                with open(os.path.join(path, "cgroup.procs")) as fh:
                    pids = [int(p) for p in fh.read().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self):
        for path in self.paths.values():
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.05)


def _rlimits(limits, use_data_limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb * 2**20,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if use_data_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_mb * 2**20,) * 2)
    return apply


# ---------------------------------------------------------------------------------------------


def _read_statuses(path, offset, statuses, max_bytes=8 * 2**20):
    """Parse new complete lines of the runner's status file (untrusted: malformed lines are
    skipped, and at most max_bytes are read in all)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(max(0, max_bytes - offset))
    except OSError:
        return offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return offset
    for line in chunk[: end + 1].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            statuses.append(entry)
    return offset + end + 1


def run(cells, work_dir, out_dir, limits, env, isolate=True):
    """Run ``cells`` ([{"index", "source"}]) on ``work_dir``; records land in ``out_dir``."""
    job_dir = os.path.join(out_dir, "..", "job")
    job_dir = os.path.realpath(job_dir)
    os.makedirs(job_dir, exist_ok=True)
    status_inside = "/grader/out/status.jsonl" if isolate else os.path.join(out_dir, "status.jsonl")
    job = {"cells": cells, "cell_timeout": limits.cell_timeout, "status": status_inside}
    with open(os.path.join(job_dir, "job.json"), "w") as fh:
        json.dump(job, fh)
    for path in (work_dir, out_dir):
        os.chmod(path, 0o777)  # uid 65534 in the sandbox writes here (private copies, 0700 parent)
    env = dict(env)
    if isolate:
        env["COURSE_LIB_RECORD_TO"] = "/grader/out"
        env["HOME"] = "/home/student/work"
        cmd = bwrap_command(job_dir, work_dir, out_dir, env)
        run_env = {"PATH": "/usr/bin:/bin"}
    else:
        env["COURSE_LIB_RECORD_TO"] = out_dir
        env["HOME"] = work_dir
        cmd = [sys.executable, "-I", RUNNER, os.path.join(job_dir, "job.json")]
        run_env = env
    cgroups = Cgroups(limits)
    limit_data = not cgroups.memory

    def preexec():
        cgroups.join()
        _rlimits(limits, limit_data)()

    outcome = Outcome(isolated=isolate)
    status_path = os.path.join(out_dir, "status.jsonl")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work_dir, env=run_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=preexec, start_new_session=True)
    offset, cell_key, cell_start = 0, None, None
    try:
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            offset = _read_statuses(status_path, offset, outcome.statuses)
            now = time.monotonic()
            last = outcome.statuses[-1] if outcome.statuses else {}
            if last.get("event") == "start":
                if cell_key != last.get("cell"):
                    cell_key, cell_start = last.get("cell"), now
            else:
                cell_key, cell_start = None, None
            if cell_start is not None and now - cell_start > limits.cell_timeout + limits.grace:
                outcome.killed = "cell timeout"
            elif now - start > limits.notebook_timeout:
                outcome.killed = "notebook timeout"
            if outcome.killed:
                _kill(proc, cgroups)
                break
    finally:
        if proc.poll() is None:
            _kill(proc, cgroups)
        outcome.returncode = proc.returncode
        outcome.seconds = time.monotonic() - start
        _read_statuses(status_path, offset, outcome.statuses)
        outcome.peak_memory = cgroups.peak()
        if not outcome.killed and cgroups.oom():
            outcome.killed = "memory"
        cgroups.kill_all()
        cgroups.remove()
    return outcome


def _kill(proc, cgroups):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    cgroups.kill_all()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
