"""ps03_placement submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct answers computed differently from the solution; each must score full
marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain ``message``
in the outputs of the test cells of ``part`` (a test cell's grade id, or a tuple of them), which
must lose points, and every other part keeps its points. Parts C and D are graded against the
grader's own run of the experiment, so every submission here runs it (about 4 s each).
"""

ALTERNATIVES = {
    "keras.ops loss, a NumPy mask, an index-free sweep": {
        "A_bias_gradient": '''
def bias_gradient(model, x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    return tape.gradient(loss, model.get_layer("dense_1").bias)  # a tensor: converted by the check
''',
        "B_largest_trainable_lr": '''
def largest_trainable_lr(losses, grid, threshold):
    losses, grid = np.asarray(losses, dtype=float), np.asarray(grid, dtype=float)
    with np.errstate(invalid="ignore"):
        return float(grid[losses < threshold].max())  # NaN < t is False, inf < t is False
''',
        "C_sweep": '''
results = {p: [train_and_evaluate(p, lr) for lr in GRID] for p in PLACEMENTS}
losses = {p: np.array([r[0] for r in rows]) for p, rows in results.items()}
''',
        "C_answers": '''
answer_lr_none, answer_lr_before, answer_lr_after = (
    largest_trainable_lr(losses[p], GRID, TRAINS_BELOW) for p in PLACEMENTS)
''',
        "D_gap": '''
accuracy = {p: dict(zip(GRID, (a for _, a in results[p]))) for p in PLACEMENTS}
answer_gap = np.float32(accuracy["before"][GAP_LR] - accuracy["none"][GAP_LR])
''',
    },
}

MISTAKES = {
    "bias gradient in inference mode": {
        "cells": {"A_bias_gradient": '''
def bias_gradient(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    return tape.gradient(loss, model.get_layer("dense_1").bias).numpy()
'''},
        "message": "Most likely mistake (model called in inference mode)",
        "part": "A_bias_gradient_visible",
    },
    "a diverged run counted as training": {
        "cells": {"B_largest_trainable_lr": '''
def largest_trainable_lr(losses, grid, threshold):
    return max(lr for lr, loss in zip(grid, losses) if not loss >= threshold)
'''},
        "message": "Most likely mistake (a diverged run counted as training)",
        # NaN appears in the hidden tests only; the real sweep's diverged runs are inf
        "part": "B_largest_trainable_lr_hidden",
    },
    "the first learning rate that fails": {
        "cells": {"C_answers": '''
trained = False
for lr, loss in zip(GRID, losses["none"]):  # up the grid until it stops training
    if loss < TRAINS_BELOW:
        trained = True
    elif trained:
        answer_lr_none = lr
        break
answer_lr_before = largest_trainable_lr(losses["before"], GRID, TRAINS_BELOW)
answer_lr_after = largest_trainable_lr(losses["after"], GRID, TRAINS_BELOW)
'''},
        "message": "Most likely mistake (the first learning rate that fails)",
        "part": "C_lr_none",
    },
    "gap with the sign reversed": {
        "cells": {"D_gap": '''
i = GRID.index(GAP_LR)
answer_gap = results["none"][i][1] - results["before"][i][1]
'''},
        "message": "Most likely mistake (sign reversed)",
        "part": "D_gap_test",
    },
}
