"""Sphinx extension: re-render the claims ledger whenever another page changes.

The ledger pastes numbers and verdicts from other chapters with myst-nb's cross-page glue
(``{glue:text}`path.ipynb::key```). Those references are resolved when the ledger is
written, from the glue data each chapter saved when it was executed, so the ledger never
depends on the order in which notebooks are executed. But Sphinx re-writes only the pages
whose own source changed: after editing chapter 6 alone, an incremental build would leave the
ledger with chapter 6's old numbers. This hook marks the ledger as outdated whenever any other
document is added, changed or removed, so it is re-read (its own execution stays cached) and
re-written with the new values.
"""

LEDGER = "chapters/10_claims_ledger"


def _ledger_if_anything_changed(app, env, added, changed, removed):
    if LEDGER in env.found_docs and (set(added) | set(changed) | set(removed)) - {LEDGER}:
        return [LEDGER]
    return []


def setup(app):
    app.connect("env-get-outdated", _ledger_if_anything_changed)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
