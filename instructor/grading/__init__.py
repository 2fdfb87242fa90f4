"""The course's autograder: student code runs in a sandbox, verdicts are reached outside it.

A submission goes through the steps declared in :data:`instructor.grading.pipeline.STEPS`, in
order (as nbgrader's converters declare their preprocessors):

=======================  ===========  ==========================================================
step                     where        what
=======================  ===========  ==========================================================
ReadSubmission           worker       read the file (size-capped), parse it; invalid: every part 0
MergeIntoSource          worker       the notebook to run, rebuilt from the instructor's source
                                      (:mod:`.merge`): test and read-only cells always from it,
                                      hidden tests included; answers from the student
RunInSandbox             worker       run it in ``instructor.sandbox`` on a copy of that student's
                                      files; the checks only *record* (``coursework._record``)
LoadRecords              worker       parse the records (plain JSON, size limits)
Judge                    main         check each test cell's records against the solution's
                                      (same checks, hidden flags, cases) and judge them with
                                      ``course_lib``'s ``compare`` in this process (:mod:`.judge`)
Redact                   main         no hidden test's text in a verdict or note
WriteAutograded          main         the autograded notebook: the verdicts as the test cells'
                                      outputs, for ``nbgrader generate_feedback``
WriteGradebook           main         one gradebook transaction per student (:mod:`.record`)
WriteVerdictRecord       main         ``_grading/cache/graded/<ps>/<student>.json``: scores,
                                      verdicts, mistakes, status; for resuming and the reports
=======================  ===========  ==========================================================

``worker`` steps run in a pool of threads, ``workers`` sandboxes at once; ``main`` steps run in
the calling thread, one student at a time, in the order the runs finish, so the gradebook has
one writer. The plan of a problem set (its cells, the hidden tests, what the solution records)
is :class:`.plan.Plan`. A student whose submission and grading inputs are unchanged since the
last run is skipped (``--force`` regrades), so a run that was killed resumes where it stopped.
"""

# The version of the grading itself: part of every plan's hash (a change regrades every
# submission) and written into every verdict record. Bump it when the grading of an unchanged
# submission changes in a way the hash of the grader's own files does not capture.
VERSION = "1"

# (The steps' modules keep their names: instructor.grading.judge is the module, its judge()
# a function in it.)
from instructor.grading.pipeline import STEPS, Result, grade_class  # noqa: E402
from instructor.grading.plan import Plan, RegionError  # noqa: E402

__all__ = ["VERSION", "STEPS", "Plan", "RegionError", "Result", "grade_class"]
