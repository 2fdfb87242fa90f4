"""Instructor tools for the course's problem sets: a thin layer over nbgrader.

    python -m instructor release PS                    solutions/PS -> exercises/PS, gradebook
    python -m instructor autograde PS --submissions P  import a class (folder or .zip), grade it
    python -m instructor feedback PS                   HTML feedback, hidden tests removed
    python -m instructor grades                        _grading/grades.csv
    python -m instructor check PS [--notebook NB]      a student's self-check (visible tests)

Every command runs from the course root (the folder of ``nbgrader_config.py``), runs nbgrader
as ``sys.executable -m nbgrader`` with TensorFlow's log lines switched off, and can be re-run:
it replaces what it made before and loses nothing.
"""
