"""python -m instructor {release,autograde,feedback,grades,report,check} ... (see
instructor/__init__.py)"""

import argparse
import sys

from instructor import commands, selfcheck
from instructor.course import Course, CourseError


def parser():
    """The command line. The limits' options default to None: their values come from
    ``nbgrader_config.py`` (:meth:`instructor.sandbox.Limits.from_config`)."""
    main_parser = argparse.ArgumentParser(prog="python -m instructor", description=__doc__)
    main_parser.add_argument("--root", help="course root, the folder of nbgrader_config.py "
                             "(default: this repository)")
    sub = main_parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="regenerate exercises/PS from solutions/PS")
    p.add_argument("ps")
    p = sub.add_parser("autograde", help="import a class's submissions and grade them")
    p.add_argument("ps")
    p.add_argument("--submissions",
                   help="a folder of <student>.ipynb or <student>/<PS>.ipynb, or a .zip of one "
                   "(without it: regrade what _grading/submitted holds)")
    p.add_argument("--workers", type=int, default=None,
                   help="notebooks graded at once (default: the number of cores)")
    p.add_argument("--force", action="store_true",
                   help="regrade submissions that are unchanged since they were last graded")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per cell (default: c.Execute.timeout of nbgrader_config.py)")
    p.add_argument("--notebook-timeout", type=float, default=None,
                   help="seconds per notebook, after which it is killed "
                   "(default: c.Sandbox.notebook_timeout of nbgrader_config.py)")
    p.add_argument("--memory", type=int, default=None,
                   help="MB of memory per notebook (default: c.Sandbox.memory_mb of "
                   "nbgrader_config.py)")
    p = sub.add_parser("feedback", help="HTML feedback under _grading/feedback")
    p.add_argument("ps")
    p = sub.add_parser("grades", help="export all grades: _grading/grades.csv (nbgrader's), "
                       "grades-status.csv and grades-canvas.csv")
    p.add_argument("--roster", help="a Canvas gradebook export, for Canvas's student and "
                   "assignment ids (default: _grading/canvas-roster.csv if it exists)")
    p = sub.add_parser("report", help="the class mistake report of PS, from the verdict "
                       "records: _grading/reports/PS/report.html and report.csv")
    p.add_argument("ps")
    p = sub.add_parser("check", help="self-check a notebook against the visible tests")
    p.add_argument("ps")
    p.add_argument("--notebook", help="the notebook to check (default: exercises/PS/PS.ipynb)")
    return main_parser


def limits(course, args):
    """The limits of an autograde run: the course's configuration, overridden by the options
    given. CourseError (naming the setting and its value) if one is not usable."""
    from instructor.sandbox import Limits

    try:
        return Limits.from_config(course.config, cell_timeout=args.timeout,
                                  notebook_timeout=args.notebook_timeout,
                                  memory_mb=args.memory)
    except ValueError as exc:
        raise CourseError(str(exc)) from None


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        course = Course(args.root)
        if getattr(args, "ps", None) is not None:
            args.ps = course.resolve(args.ps)
        if args.command == "release":
            return commands.release(course, args.ps) or 0
        if args.command == "autograde":
            if args.workers is not None and args.workers < 1:
                raise CourseError(f"--workers {args.workers}: at least one is needed")
            return commands.autograde(course, args.ps, args.submissions, workers=args.workers,
                                      limits=limits(course, args), force=args.force)
        if args.command == "feedback":
            return commands.feedback(course, args.ps) or 0
        if args.command == "grades":
            return commands.grades(course, roster=args.roster) or 0
        if args.command == "report":
            return commands.report(course, args.ps) or 0
        return selfcheck.run(course, args.ps, args.notebook)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
