"""python -m instructor {release,autograde,feedback,grades,check} ... (see instructor/__init__.py)"""

import argparse
import sys

from instructor import commands, selfcheck
from instructor.course import Course, CourseError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m instructor", description=__doc__)
    parser.add_argument("--root", help="course root, the folder of nbgrader_config.py "
                        "(default: this repository)")
    sub = parser.add_subparsers(dest="command", required=True)
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
                   help="seconds per cell (default: Execute.timeout of nbgrader_config.py)")
    p.add_argument("--notebook-timeout", type=float, default=600.0,
                   help="seconds per notebook, after which it is killed (default 600)")
    p.add_argument("--memory", type=int, default=4096, help="MB of memory per notebook")
    p = sub.add_parser("feedback", help="HTML feedback under _grading/feedback")
    p.add_argument("ps")
    sub.add_parser("grades", help="export all grades to _grading/grades.csv")
    p = sub.add_parser("check", help="self-check a notebook against the visible tests")
    p.add_argument("ps")
    p.add_argument("--notebook", help="the notebook to check (default: exercises/PS/PS.ipynb)")
    args = parser.parse_args(argv)

    try:
        course = Course(args.root)
        if getattr(args, "ps", None) is not None:
            args.ps = course.resolve(args.ps)
        if args.command == "release":
            return commands.release(course, args.ps) or 0
        if args.command == "autograde":
            from instructor.sandbox import Limits

            limits = Limits(cell_timeout=args.timeout or course.config.Execute.get("timeout", 120),
                            notebook_timeout=args.notebook_timeout, memory_mb=args.memory)
            return commands.autograde(course, args.ps, args.submissions, workers=args.workers,
                                      limits=limits, force=args.force)
        if args.command == "feedback":
            return commands.feedback(course, args.ps) or 0
        if args.command == "grades":
            return commands.grades(course) or 0
        return selfcheck.run(course, args.ps, args.notebook)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
