"""Checks behind the problem sets' grade cells: pure NumPy, no Keras import (except the checks
that grade Keras code -- ps02's layer, ps03's gradients and experiment, ps06's fine-tuning
check -- which import Keras when they run).

One module per problem set (``course_lib.checks.ps01``); the shared machinery (calling the
learner's function on fixed inputs, comparing with ``course_lib.reference`` and naming the
likely mistake) is in ``course_lib.checks._core``, and multiple-choice questions from ps05 on
use ``course_lib.checks._choice``.

>>> from course_lib.checks import ps01 as checks
>>> checks.check_forward_train(batchnorm_forward_train)   # doctest: +SKIP
batchnorm_forward_train: all 2 visible cases pass.
"""
