"""The fuzz seed of this run: FUZZ_SEED when given, else a fresh one each run.

tests/robustness/test_fuzz.py's random inputs come from hypothesis seeded with it, so every run
covers new inputs and a failure is reproduced with
`FUZZ_SEED=<seed> make test PYTEST_ARGS=tests/robustness/test_fuzz.py`; the seed is printed in
pytest's header and summary (tests/conftest.py) and in every failure message.
"""

import os
import secrets

_given = os.environ.get("FUZZ_SEED", "").strip()
SEED = int(_given) if _given else secrets.randbelow(2**32)


def reproduce() -> str:
    return f"FUZZ_SEED={SEED} make test PYTEST_ARGS=tests/robustness/test_fuzz.py"
