"""Instructor tools for the course's problem sets.

    python -m instructor release PS                    solutions/PS -> exercises/PS, gradebook
    python -m instructor autograde PS --submissions P  import a class (folder or .zip), grade it
                                                       in sandboxes (instructor/grading/)
    python -m instructor feedback PS                   HTML feedback, hidden tests removed
    python -m instructor grades [--roster CSV]         _grading/grades.csv (nbgrader's export),
                                                       grades-status.csv, grades-canvas.csv
    python -m instructor report PS                     the class mistake report, from the
                                                       verdict records: _grading/reports/PS/
    python -m instructor check PS [--notebook NB]      a student's self-check (visible tests)

Every command runs from the course root (the folder of ``nbgrader_config.py``) and can be
re-run: it replaces what it made before and loses nothing. release, feedback and nbgrader's
export run nbgrader as ``sys.executable -m nbgrader``; the self-check runs a kernel as nbgrader
does. autograde does NOT use nbgrader's autograder: it replaces it with the course's own
(``instructor/grading/``, ``sandbox.py``, ``runner.py``, ``submissions.py``: some 2,200
lines), which runs each notebook in a sandbox, judges what the checks recorded in this
process, and writes nbgrader's gradebook and the autograded notebooks nbgrader's
``generate_feedback`` reads. nbgrader's formats are kept (gradebook, folders, metadata,
timestamp.txt); its autograding code is not run.
"""
