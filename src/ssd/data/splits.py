"""One split rule for every command: split names matched by meaning, and a fixed split for unsplit data.

Datasets name their splits as their tools like: `train2017`, `valid`, `validation`, `dev`, `test-dev`. A
split's *role* (training, validation, test) is read from its name without digits and separators, so asking
for "val" finds `val2017`, `valid` or `validation`, and `train`, `eval`, `data check`, `data show` and
`detect` all pick the same split for the same words.

A dataset without splits (one folder of pictures, or one split whose name has no role, such as CVAT's
`default`) is divided here: a picture is validation when a hash of the seed and its path inside the dataset
falls under `val_fraction` (`validation_indices`). Its side depends on its name alone, so the same folder
gives the same split on any machine, and adding pictures moves none of the others between the two parts.
"""

from __future__ import annotations

import hashlib
import re

from ssd.errors import DatasetError

TRAINING, VALIDATION, TEST = "training", "validation", "test"

# Words, after digits and separators are removed, that name each role; the first of each is preferred when a
# dataset has several (VOC's `train` before `trainval`).
_ROLE_WORDS = {
    TRAINING: ("train", "training", "trainval"),
    VALIDATION: ("val", "valid", "validation", "dev", "eval", "evaluation"),
    TEST: ("test", "testing", "testdev"),
}

# The two parts of an unsplit dataset, and how it is divided unless told otherwise.
AUTOMATIC_SPLITS = ("train", "val")
WHOLE = "all"  # every picture of a dataset, split or not
VAL_FRACTION = 0.1
SPLIT_SEED = 0


def _word(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def split_role(name: str) -> str | None:
    """TRAINING, VALIDATION or TEST for a split name (`train2017`, `Valid`, `test-dev`), else None."""
    word = _word(name)
    return next((role for role, words in _ROLE_WORDS.items() if word in words), None)


def is_unsplit(names: list[str]) -> bool:
    """Whether a dataset whose format lists `names` has to be divided here: no split, or one without a role."""
    return not names or (len(names) == 1 and split_role(names[0]) is None)


def _preference(name: str) -> tuple[int, str]:
    role = split_role(name)
    words = _ROLE_WORDS.get(role, ())
    word = _word(name)
    return (words.index(word) if word in words else len(words), name)


def resolve_split(requested: str, names: list[str], where: str) -> str:
    """The split of `names` that `requested` means: itself, else the one split with the same role.

    "val" finds `val2017` or `valid`; "train" finds `train2017` (and `trainval` only when there is no
    `train`-like split). DatasetError naming `where` and the splits found when none, or several, fit.
    """
    if requested in names:
        return requested
    role = split_role(requested)
    if role is not None:
        same = sorted((n for n in names if split_role(n) == role), key=_preference)
        best = [n for n in same if _preference(n)[0] == _preference(same[0])[0]] if same else []
        if len(best) == 1:
            return best[0]
        if len(best) > 1:
            raise DatasetError(
                f"{where}: split '{requested}' could be any of {', '.join(best)}; name one exactly"
            )
    raise DatasetError(f"{where}: no split '{requested}' (splits found: {', '.join(names) or 'none'})")


def default_training_split(names: list[str], where: str) -> str:
    """The split a run trains on when none is named: the preferred one with the training role."""
    training = sorted((n for n in names if split_role(n) == TRAINING), key=_preference)
    if training:
        return resolve_split(training[0], names, where)
    if len(names) == 1:
        return names[0]
    raise DatasetError(
        f"{where}: no training split (splits found: {', '.join(names) or 'none'}); choose one with --train-split"
    )


def default_validation_split(names: list[str], train_split: str) -> str | None:
    """The split a run validates on when none is named: validation, else test; never one holding the
    training pictures (VOC's `val` lies inside `trainval`)."""
    inside_training = _word(train_split) == "trainval"
    for role in (VALIDATION, TEST):
        if role == VALIDATION and inside_training:
            continue
        found = sorted((n for n in names if split_role(n) == role and n != train_split), key=_preference)
        if found:
            return found[0]
    return None


def validation_indices(keys: list[str], val_fraction: float, seed: int) -> set[int]:
    """Which of the pictures named by `keys` (paths inside the dataset) are validation in an automatic split.

    Each picture is validation when a seeded hash of its name, read as a number in [0, 1), is below
    `val_fraction`: a picture's side depends on its name alone, so adding or removing pictures moves none of
    the others. When that leaves no validation picture, the one with the lowest hash is taken, and when it
    leaves no training picture, the one with the highest goes back to training.
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if len(keys) < 2:
        return set()
    scores = [_unit_hash(f"{seed}:{key}") for key in keys]
    chosen = {i for i, score in enumerate(scores) if score < val_fraction}
    if not chosen:
        chosen = {min(range(len(keys)), key=scores.__getitem__)}
    if len(chosen) == len(keys):
        chosen.discard(max(range(len(keys)), key=scores.__getitem__))
    return chosen


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from `text`, the same on every machine and in every Python process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
