"""How long a test waits for something that should happen within moments.

Generous by default: a loaded CI machine must not fail a correct test. scripts/mutants.sh shortens every deadline
(LLADA_TEST_DEADLINE_SCALE): a planted bug that makes a test wait for what never comes costs that test's whole
deadline, once per mutant, and thousands of mutants are run.
"""

import os

SCALE = float(os.environ.get("LLADA_TEST_DEADLINE_SCALE", "1"))


def deadline_s(seconds: float) -> float:
    """`seconds`, as this run scales deadlines."""
    return seconds * SCALE
