"""The grader with a PostgreSQL gradebook, as several graders or machines share one.

The test starts its own PostgreSQL server (``initdb`` + ``pg_ctl`` of the machine, Debian's
``postgresql`` package; as root the server runs as the unprivileged user ``nobody``), on a
free TCP port on 127.0.0.1 with a throwaway data folder, and stops it at the end. Two course
folders stand for two grading machines: both point ``NBGRADER_DB_URL`` at the server, release
the same problem set, and grade their halves of a class AT THE SAME TIME, two sandboxes each.
The one gradebook must then hold the whole class, each student once, with the right scores;
and ``instructor grades`` exports it.

Skipped (with the reason) where there is no PostgreSQL server binary or no ``psycopg2``:
``make test-postgres`` runs it on its own.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_problem_sets import ENV, course, instructor, load_variants, student  # noqa: E402

PS = "ps01_numpy_batchnorm"
pytestmark = pytest.mark.slow


def _binary(name):
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    return None


@pytest.fixture
def postgres():
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (requirements.lock)")
    base = Path(tempfile.mkdtemp(prefix="grading-pg-"))  # not under pytest's 0700 folders
    data = base / "data"
    user = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chmod(base, 0o777)
        user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "HOME": str(base)}
    subprocess.run([initdb, "-D", str(data), "-U", "grader", "--auth=trust", "-E", "UTF8"],
                   env=env, check=True, capture_output=True, cwd=base, **user)
    log = base / "server.log"
    subprocess.run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                   env=env, check=True, capture_output=True, cwd=base, **user)
    try:
        import psycopg2

        for _ in range(50):
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="grader",
                                        dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE gradebook")
        conn.close()
        yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/gradebook"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], env=env,
                       capture_output=True, cwd=base, **user)
        shutil.rmtree(base, ignore_errors=True)


def test_two_graders_share_one_postgres_gradebook(tmp_path, postgres, monkeypatch):
    monkeypatch.setitem(ENV, "NBGRADER_DB_URL", postgres)
    machines = [course(tmp_path / f"machine{i}", PS) for i in (1, 2)]
    for root in machines:
        instructor(root, "release", PS)  # both: the same assignment, recorded once
    mistake = load_variants(PS).MISTAKES["unbiased variance"]["cells"]
    expected, procs = {}, []
    for m, root in enumerate(machines, 1):
        incoming = tmp_path / f"incoming{m}"
        incoming.mkdir()
        release = root / "exercises" / PS / f"{PS}.ipynb"
        source = root / "solutions" / PS / f"{PS}.ipynb"
        for i in range(4):
            who = f"m{m}s{i}"
            wrong = (i + m) % 2 == 0
            nbformat.write(student(release, source, mistake if wrong else None),
                           incoming / f"{who}.ipynb")
            expected[who] = 19.0 if wrong else 25.0
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "instructor", "--root", str(root), "autograde", PS,
             "--submissions", str(incoming), "--workers", "2"],
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
        assert "locked" not in out.lower() and "Traceback" not in out, out

    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", ENV["PATH"])
    with Gradebook(postgres, "batchnorm-course") as gb:
        assert [a.name for a in gb.assignments] == [PS]
        subs = gb.find_assignment(PS).submissions
        got = {s.student.id: s.score for s in subs}
        assert len(subs) == len(expected) == len(gb.students)
    assert got == expected

    instructor(machines[0], "grades")
    rows = (machines[0] / "_grading" / "grades.csv").read_text().splitlines()
    assert len(rows) == 1 + len(expected)
