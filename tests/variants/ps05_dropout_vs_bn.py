"""ps05_dropout_vs_bn submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct implementations written differently from the solution; each must score
full marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain
``message`` and the test cell ``part`` must lose its points (every other part keeps them).
Cells not listed keep the solution's source.
"""

ALTERNATIVES = {
    "np.var, np.where, moveaxis and reshape": {
        "B_dropout_variances": '''
def dropout_variances(mean, var, p):
    return var / p + (1 - p) / p * mean**2, var.copy()
''',
        "B_measured_variances": '''
def measured_variances(x, mask, p):
    var_train = np.var(np.where(mask, x / p, 0.0), axis=0)
    var_inference = np.var(x, axis=0)
    return var_train, var_inference, var_inference / var_train
''',
        "C_channel_statistics": '''
def channel_statistics(x, data_format="channels_last"):
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(axis=0), flat.var(axis=0)
''',
        "A_q1_answer": 'answer_q1 = "C"',
        "A_q2_answer": 'answer_q2 = " a "',
        "A_q3_answer": 'answer_q3 = "(d)"',
    },
    "float64, einsum and keepdims": {
        "B_dropout_variances": '''
def dropout_variances(mean, var, p):
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    second_moment = p * (mean**2 + var) / p**2
    return [second_moment - mean**2, var]
''',
        "B_measured_variances": '''
def measured_variances(x, mask, p):
    x = x.astype(np.float64)
    d = x * mask / p
    dc, xc = d - d.mean(axis=0), x - x.mean(axis=0)
    n = len(x)
    var_train = np.einsum("nc,nc->c", dc, dc) / n
    var_inference = np.einsum("nc,nc->c", xc, xc) / n
    return var_train, var_inference, var_inference / var_train
''',
        "C_channel_statistics": '''
def channel_statistics(x, data_format="channels_last"):
    axis = -1 if data_format == "channels_last" else 1
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
''',
        "A_q4_answer": 'answer_q4 = "B"',
    },
}

MISTAKES = {
    "rate instead of keep probability": {
        "cells": {"B_dropout_variances": '''
def dropout_variances(mean, var, p):
    q = 1 - p
    return (mean**2 + var) / q - mean**2, var
'''},
        "message": "Most likely mistake (rate instead of keep probability)",
        "part": "B_dropout_variances_visible",
    },
    "mean term missing": {
        "cells": {"B_dropout_variances": '''
def dropout_variances(mean, var, p):
    return var / p, var
'''},
        "message": "Most likely mistake (mean term missing)",
        "part": "B_dropout_variances_visible",
    },
    "unbiased variance": {
        "cells": {"B_measured_variances": '''
def measured_variances(x, mask, p):
    var_train = np.var(x * mask / p, axis=0, ddof=1)
    var_inference = np.var(x, axis=0, ddof=1)
    return var_train, var_inference, var_inference / var_train
'''},
        "message": "Most likely mistake (unbiased variance)",
        "part": "B_measured_variances_visible",
    },
    "wrong channel axis": {
        "cells": {"C_channel_statistics": '''
def channel_statistics(x, data_format="channels_last"):
    return x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
'''},
        "message": "Most likely mistake (wrong channel axis)",
        "part": "C_channel_statistics_visible",
    },
    "batch axis only": {
        "cells": {"C_channel_statistics": '''
def channel_statistics(x, data_format="channels_last"):
    return x.mean(axis=0), x.var(axis=0)
'''},
        "message": "Most likely mistake (batch axis only (a dense layer's statistics))",
        "part": "C_channel_statistics_visible",
    },
    "q1: internal covariate shift taken as established": {
        "cells": {"A_q1_answer": 'answer_q1 = "a"'},
        "message": "Santurkar et al. (2018) contest it",
        "part": "A_q1",
    },
    "q4: Dropout's variance taken as kept by the 1/p": {
        "cells": {"A_q4_answer": 'answer_q4 = "c"'},
        "message": "The 1/p keeps the MEAN",
        "part": "A_q4",
    },
}
