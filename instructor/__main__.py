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
    p.add_argument("--submissions", required=True,
                   help="a folder of <student>.ipynb or <student>/<PS>.ipynb, or a .zip of one")
    p = sub.add_parser("feedback", help="HTML feedback under _grading/feedback")
    p.add_argument("ps")
    sub.add_parser("grades", help="export all grades to _grading/grades.csv")
    p = sub.add_parser("check", help="self-check a notebook against the visible tests")
    p.add_argument("ps")
    p.add_argument("--notebook", help="the notebook to check (default: exercises/PS/PS.ipynb)")
    args = parser.parse_args(argv)

    try:
        course = Course(args.root)
        if args.command == "release":
            return commands.release(course, args.ps) or 0
        if args.command == "autograde":
            return commands.autograde(course, args.ps, args.submissions)
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
