"""The user's own data for ``fastopt train --data``: an ``.npz`` with ``X`` and ``y``, or a CSV.

:func:`load_table` reads the file and checks it: every problem raises :class:`DataError` (a
ValueError) naming the file and what is wrong with it (the column, the row, the value), before
anything trains.  :func:`split_table` shuffles the samples with a seed into a training and a
held-out part and standardizes the features on the training part, as
:func:`fastopt.data.prepare_data` does for the digits.

Formats
-------
``.npz``
    ``X``: a 2-D numeric array (samples x features); ``y``: a 1-D array, one target per sample
    (numbers, or strings for class labels).  Other arrays in the file are ignored; pickled
    object arrays are refused.
CSV (any other suffix)
    Comma-separated numbers, one sample per row.  The target is the last column unless
    ``target`` names another (a header name, or a 0-based index; negative counts from the
    end).  The first row is a header when one of its feature cells is not a number.  Class
    labels may be words; features must be numbers (an empty cell is refused, naming it).

Tasks
-----
``"classification"``
    The targets are class labels: their distinct values, sorted, become the classes 0..C-1
    (``Table.classes`` keeps the original labels).  Numeric labels must be whole numbers.
``"regression"``
    The targets are real numbers (float32).

Examples
--------
>>> import numpy as np, io, os, tempfile
>>> from fastopt.data.tabular import load_table
>>> path = os.path.join(tempfile.mkdtemp(), "toy.csv")
>>> _ = open(path, "w").write("a,b,label\\n1,2,cat\\n3,4,dog\\n5,6,cat\\n")
>>> t = load_table(path)
>>> t.X.shape, t.y.tolist(), t.classes.tolist(), t.target
((3, 2), [0, 1, 0], ['cat', 'dog'], 'label')
"""

import csv
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..kernels import _check
from .preprocessing import Standardizer

__all__ = ["DataError", "Table", "load_table", "split_table", "TASKS"]

#: The tasks :func:`load_table` knows.
TASKS = ("classification", "regression")


class DataError(ValueError):
    """A data file that cannot be trained on; the message names the file and the problem."""


@dataclass(frozen=True)
class Table:
    """A checked data set.

    Attributes
    ----------
    X : ndarray of float32, (n_samples, n_features)
    y : ndarray, (n_samples,)
        int64 class indices (classification) or float32 targets (regression).
    task : {"classification", "regression"}
    classes : ndarray or None
        The original label of each class index (classification), else None.
    features : list of str
        A name per feature column (the header's, or ``"x0"``, ``"x1"``, ...).
    target : str
        The target's name (the header's, ``"y"`` for an npz, or ``"column <k>"``).
    source : str
        The file it came from.
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    classes: np.ndarray | None
    features: list
    target: str
    source: str

    @property
    def n_outputs(self):
        """Outputs a model needs: the number of classes, or 1 for regression."""
        return len(self.classes) if self.task == "classification" else 1


def _number(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path, target):
    """(feature names, target name, X as float64, y as a list of str cells)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text (CSV) file: {e.reason} at byte "
                        f"{e.start}") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file: {e}") from None
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    width = len(rows[0])
    if width < 2:
        raise DataError(f"{path}: needs at least 2 columns (features and a target), found "
                        f"{width}; is it comma-separated?")
    header = None
    names = [f"column {k}" for k in range(width)]
    # the target column first (by index it does not need the header)
    if target is None:
        tcol = width - 1
    elif isinstance(target, str) and not _is_int(target):
        tcol = None
    else:
        tcol = int(target)
        if not -width <= tcol < width:
            raise DataError(f"{path}: target column {tcol} is out of range: the file has "
                            f"{width} columns (0..{width - 1})")
        tcol %= width
    first = [c.strip() for c in rows[0]]
    looks_like_header = any(_number(c) is None for k, c in enumerate(first)
                            if tcol is None or k != tcol)
    if looks_like_header:
        header, rows = first, rows[1:]
        names = header
        if tcol is None:
            if target not in header:
                raise DataError(f"{path}: no column named {target!r}; the header has "
                                f"{', '.join(repr(h) for h in header)}")
            if header.count(target) > 1:
                raise DataError(f"{path}: {header.count(target)} columns are named "
                                f"{target!r}; give the target by index")
            tcol = header.index(target)
    elif tcol is None:
        raise DataError(f"{path}: target {target!r} is a column name, but the file has no "
                        "header row (its first row is all numbers): give the column's index")
    if not rows:
        raise DataError(f"{path}: the file has a header but no data rows")
    feats = [k for k in range(width) if k != tcol]
    X = np.empty((len(rows), width - 1), np.float64)
    y = []
    first_line = 2 if header is not None else 1
    for i, row in enumerate(rows):
        line = first_line + i
        if len(row) != width:
            raise DataError(f"{path}: row {line} has {len(row)} columns, expected {width} "
                            "like the first row")
        for j, k in enumerate(feats):
            v = _number(row[k])
            if v is None:
                what = "an empty cell" if not row[k].strip() else repr(row[k].strip())
                raise DataError(f"{path}: row {line}, column {names[k]!r}: {what} is not a "
                                "number (features must be numbers)")
            X[i, j] = v
        y.append(row[tcol].strip())
    return [names[k] for k in feats], names[tcol], X, y


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def _read_npz(path, target):
    if target is not None:
        raise DataError(f"{path}: an .npz file holds its target in 'y'; target= (--target) "
                        "is for CSV files")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (not a zip archive of arrays, as "
                        "numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            X, y = (z[k] if k in files else None for k in ("X", "y"))
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file: {e}") from None
    except ValueError:   # an object array (pickled): np.load refuses it
        raise DataError(f"{path}: holds an object (pickled) array; fastopt reads arrays of "
                        "numbers or strings only (loading pickled data could run code)") from None
    missing = [k for k, a in (("X", X), ("y", y)) if a is None]
    if missing:
        raise DataError(f"{path}: no array named {' or '.join(map(repr, missing))}; the file "
                        f"has {', '.join(map(repr, files)) or 'no arrays'} (an .npz for fastopt "
                        "holds X, samples x features, and y)")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (samples x features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: X must hold numbers, got dtype {X.dtype}")
    if y.ndim != 1:
        raise DataError(f"{path}: y must be 1-D (one target per sample), got shape {y.shape}")
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{path}: y must hold numbers or strings, got dtype {y.dtype}")
    if len(y) != len(X):
        raise DataError(f"{path}: X has {len(X)} samples but y has {len(y)}")
    names = [f"x{k}" for k in range(X.shape[1])]
    return names, "y", X.astype(np.float64), y


def _targets(path, name, y, task):
    """(y, classes) for ``task``: class indices and labels, or float32 values."""
    cells = np.asarray(y)
    numeric = cells.dtype.kind in "biuf"
    if not numeric:
        values = [_number(str(c)) for c in cells]
        numeric = all(v is not None for v in values)
        if numeric:
            cells = np.asarray(values, np.float64)
    if task == "regression":
        if not numeric:
            bad = next(str(c) for c in np.asarray(y) if _number(str(c)) is None)
            raise DataError(f"{path}: target {name!r} holds {bad!r}, which is not a number; "
                            "regression needs numeric targets (--task classification for "
                            "class labels)")
        values = cells.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: target {name!r} has non-finite values (NaN or inf)")
        if np.abs(values).max(initial=0.0) > np.finfo(np.float32).max:
            raise DataError(f"{path}: target {name!r} has values beyond float32's range")
        return values.astype(np.float32), None
    if numeric:
        values = cells.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: target {name!r} has non-finite values (NaN or inf)")
        frac = values[values != np.round(values)]
        if frac.size:
            raise DataError(f"{path}: target {name!r} holds {frac[0]:g}, not a whole number: "
                            "class labels must be integers or words (--task regression for "
                            "real-valued targets)")
        cells = values.astype(np.int64)
    classes, index = np.unique(cells, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{path}: target {name!r} has a single class ({classes[0].item()!r}); "
                        "classification needs at least 2")
    return index.astype(np.int64).reshape(-1), classes


def load_table(path, *, target=None, task="classification"):
    """Read and check a data file (see the module docstring for the formats).

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` file (arrays ``X`` and ``y``) or a CSV file.
    target : str or int, optional
        CSV only: the target column, by header name or 0-based index (negative from the end);
        default the last column.
    task : {"classification", "regression"}, default "classification"

    Returns
    -------
    Table

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    DataError
        The file cannot be read or trained on: the message names the file and the problem.
    TypeError, ValueError
        A bad ``target`` or ``task`` argument.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise TypeError(f"target must be a column name (str) or index (int), got "
                        f"{type(target).__name__}")
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, got {type(task).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")
    if path.lower().endswith(".npz"):
        features, name, X, y = _read_npz(path, target)
    else:
        features, name, X, y = _read_csv(path, None if target is None else str(target))
    if len(X) < 3:
        raise DataError(f"{path}: has {len(X)} samples; training needs at least 3 (2 to "
                        "train, 1 held out)")
    if X.shape[1] == 0:
        raise DataError(f"{path}: has no feature columns")
    if not np.isfinite(X).all():
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"{path}: feature {features[j]!r} of sample {i} is {X[i, j]} "
                        "(features must be finite)")
    if np.abs(X).max(initial=0.0) > np.finfo(np.float32).max:
        raise DataError(f"{path}: features beyond float32's range")
    y, classes = _targets(path, name, y, task)
    return Table(X=X.astype(np.float32), y=y, task=task, classes=classes,
                 features=list(features), target=name, source=path)


def split_table(table, seed, test_fraction=0.2):
    """Shuffle ``table``'s samples with ``seed`` into a training and a held-out part.

    The features are standardized with the training part's statistics (as
    :func:`fastopt.data.prepare_data` does for the digits).

    Parameters
    ----------
    table : Table
    seed : int >= 0
    test_fraction : float in (0, 1)
        The held-out share; each part keeps at least 2 (training) and 1 (held-out) samples.

    Returns
    -------
    (X_train, y_train, X_test, y_test)
    """
    if not isinstance(table, Table):
        raise TypeError(f"table must be a Table (load_table), got {type(table).__name__}")
    seed = _check.integer("seed", seed, 0)
    test_fraction = _check.unit_interval("test_fraction", test_fraction)
    n = len(table.y)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0:
        n_test = max(n_test, 1)
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"test_fraction = {test_fraction} of {n} samples leaves {n - n_test} "
                         f"to train and {n_test} held out; needs at least 2 and 1")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    scaler = Standardizer()
    Xtr = scaler.fit_transform(table.X[train])
    Xte = scaler.transform(table.X[test])
    return Xtr, table.y[train], Xte, table.y[test]
