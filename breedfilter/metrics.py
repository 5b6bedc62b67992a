"""train.py's metric lines (``epoch=2; train_loss=0.41; valid_accuracy=0.8710; lr=0.000742;``) as regexes.

These are SageMaker's metric definitions for training and tuning jobs, and the local tuner scrapes subprocess
trials with the very same regexes, so what a local study optimises is what a SageMaker tuning job sees.

    python -c "from breedfilter import metrics; print(metrics.definitions())"
"""

from __future__ import annotations

import re

# Every number train.py prints per epoch (trainer.metric_line), after the test (train.py) and after fitting its
# decisions (decision_fit.py); order as printed.
NAMES = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "lr",
    "epoch_seconds",
    "best_valid_accuracy",
    "test_loss",
    "test_accuracy",
    # after training (training/decision_fit.py): the chosen threshold and what it is expected to give
    "probability_threshold",
    "expected_coverage",
    "ece_after",
)
# A float as Python formats it (0.8710, 7.42e-05, 3); nan/inf never match, so SageMaker never sees them.
_NUMBER = r"([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)"


def regex(name: str) -> str:
    r"""``\bvalid_accuracy=(number);`` — the word boundary keeps it off ``best_valid_accuracy=``."""
    return rf"\b{name}={_NUMBER};"


def definitions() -> list[dict[str, str]]:
    """SageMaker ``MetricDefinitions``: ``[{"Name": "valid_accuracy", "Regex": ...}, ...]``."""
    return [{"Name": name, "Regex": regex(name)} for name in NAMES]


_COMPILED = {name: re.compile(regex(name)) for name in NAMES}


def scrape(line: str) -> dict[str, float]:
    """The metrics one log line carries, as SageMaker would read them (the first match per name)."""
    found = {}
    for name, pattern in _COMPILED.items():
        match = pattern.search(line)
        if match:
            found[name] = float(match.group(1))
    return found
