"""Checks behind the problem sets' grade cells: pure NumPy, no Keras import (except the checks
that grade Keras code -- ps02_keras_layer's layer, ps03_placement's gradients and experiment, ps06_inference's fine-tuning
check -- which import Keras when they run).

One module per problem set (``coursework.ps01_numpy_batchnorm``); the shared machinery (calling the
learner's function on fixed inputs, comparing with ``course_lib.reference`` and naming the
likely mistake) is in ``coursework._core``, and every problem set with multiple-choice
questions uses ``coursework._choice``.

>>> from coursework import ps01_numpy_batchnorm as checks
>>> checks.check_forward_train(batchnorm_forward_train)   # doctest: +SKIP
batchnorm_forward_train: all 2 visible cases pass.
"""
