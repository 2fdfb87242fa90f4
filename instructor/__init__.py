"""Instructor tools for the course's problem sets: a thin layer over nbgrader.

    python -m instructor release PS                    solutions/PS -> exercises/PS, gradebook
    python -m instructor autograde PS --submissions P  import a class (folder or .zip), grade it
                                                       in sandboxes (instructor/grader.py)
    python -m instructor feedback PS                   HTML feedback, hidden tests removed
    python -m instructor grades                        _grading/grades.csv
    python -m instructor check PS [--notebook NB]      a student's self-check (visible tests)

Every command runs from the course root (the folder of ``nbgrader_config.py``) and can be
re-run: it replaces what it made before and loses nothing. release, feedback and grades run
nbgrader as ``sys.executable -m nbgrader``; autograde runs each student's notebook in a
sandbox (``instructor/sandbox.py``, ``instructor/runner.py``) and judges what the checks
recorded in this process, with nbgrader's gradebook as the store (``instructor/grader.py``).
"""
