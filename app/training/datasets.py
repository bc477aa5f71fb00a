"""Datasets to train on: the library's seeded sets and the user's own CSV files.

A dataset in a request is a name (``"circle"``), an object ``{"name", "noise", "num_examples",
"test_fraction", "seed"}``, or ``{"csv_id", "test_fraction", "seed", "task"}`` for a CSV file
uploaded with ``POST /api/datasets/csv``. Either way it becomes a :class:`Data`: training and
test arrays in NumPy, integer class labels for classification and float targets for regression.

CSV files: numeric columns, the last one the target, an optional header row (a first row with no
number in it). Every check names the line and the column at fault.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jax
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.cache import BoundedCache
from app.errors import PlaygroundError
from app.settings import Settings
from library.data import DATASETS, train_test_split

MAX_CSV_COLUMNS = 256
"""Columns in an uploaded CSV file (features and the target)."""
MIN_CSV_ROWS = 4
"""Rows of data a CSV file needs: enough for a training and a test set."""
MAX_CLASSES = 20
"""The most classes a CSV target may have to be read as class labels (``task="auto"``)."""
MAX_SEED = 2**31 - 1

DatasetName = Literal["circle", "xor", "two_gaussians", "spiral", "sine", "prototypes"]
DEFAULT_NUM_EXAMPLES = {"prototypes": 1250}
"""Examples generated when the request names none, where it differs from the library's default:
1,250 prototypes with a test fraction of 0.2 leave the reference's 1,000 for training."""

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NOT_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class GeneratedDataset(BaseModel):
    """One of the library's seeded datasets (``library.data.DATASETS``)."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = Field(
        "circle",
        description="circle, xor, two_gaussians, spiral (2-D classification), sine (1-D "
        "regression) or prototypes (the library's reference task, 100-D, 10 classes).",
    )
    noise: float | None = Field(
        None,
        ge=0,
        le=5,
        allow_inf_nan=False,
        description="The set's noise (see its description); default: the library's.",
    )
    num_examples: int | None = Field(
        None, ge=MIN_CSV_ROWS, description="Examples generated, training and test together."
    )
    test_fraction: float = Field(
        0.2, ge=0.05, le=0.9, description="The share of the examples held out for testing."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the data and of the split.")


class CsvDataset(BaseModel):
    """A CSV file uploaded to this workspace."""

    model_config = ConfigDict(extra="forbid")

    csv_id: str = Field(min_length=1, max_length=32, description="From POST /api/datasets/csv.")
    test_fraction: float = Field(0.2, ge=0.05, le=0.9)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the train/test split.")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto",
        description="auto: class labels when the target holds at most 20 distinct integers, "
        "regression otherwise.",
    )


DatasetChoice = Annotated[
    DatasetName | GeneratedDataset | CsvDataset,
    Field(description='A name ("circle"), {"name", "noise", ...} or {"csv_id", ...}.'),
]


def as_dataset(choice: Any) -> GeneratedDataset | CsvDataset:
    """The object form of a dataset choice (a bare name becomes ``{"name": name}``)."""
    if isinstance(choice, str):
        return GeneratedDataset(name=choice)
    return choice


@dataclass
class Data:
    """A dataset split into training and test arrays (NumPy)."""

    name: str
    description: str
    task: Literal["classification", "regression"]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def target_dim(self) -> int:
        """Classes for classification, target columns for regression."""
        if self.task == "classification":
            return self.num_classes
        return int(self.y_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "target_dim": self.target_dim,
            "train": int(self.x_train.shape[0]),
            "test": int(self.x_test.shape[0]),
            "class_names": self.class_names,
            "columns": self.columns,
        }


def catalog() -> list[dict[str, Any]]:
    """Every generated dataset with its metadata, for ``GET /api/datasets`` and the form."""
    out = []
    for name in DatasetName.__args__:
        d = DATASETS[name]
        out.append(
            {
                "name": name,
                "description": d.description,
                "task": d.task,
                "input_dim": d.input_dim,
                "output_dim": d.output_dim,
                "default_num_examples": DEFAULT_NUM_EXAMPLES.get(name, d.default_num_examples),
                "default_noise": d.default_noise,
                "noise_meaning": d.noise_meaning,
            }
        )
    return out


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer labels from integer labels or one-vs-all targets."""
    return (y if y.ndim == 1 else np.argmax(y, axis=-1)).astype(np.int32)


_generators: BoundedCache[str, Any] = BoundedCache(len(DATASETS))
_split = jax.jit(train_test_split, static_argnums=(3,))


def _compiled_generator(name: str):
    """The dataset's generator and the split, compiled as one function (eager JAX would compile
    each of their dozens of operations separately, seconds on a busy machine)."""
    meta = DATASETS[name]

    def generate_and_split(key, num_examples, noise, test_fraction):
        data_key, split_key = jax.random.split(key)
        x, y = meta(data_key, num_examples, noise)
        return train_test_split(split_key, x, y, test_fraction)

    return _generators.get_or_make(
        name, lambda: jax.jit(generate_and_split, static_argnums=(1, 2, 3))
    )


def generate(spec: GeneratedDataset, settings: Settings) -> Data:
    """Generate a library dataset and split it (the seed draws both)."""
    meta = DATASETS[spec.name]
    num = spec.num_examples or DEFAULT_NUM_EXAMPLES.get(spec.name, meta.default_num_examples)
    if num > settings.max_dataset_rows:
        raise PlaygroundError(
            422,
            f"num_examples is {num:,}; the limit is {settings.max_dataset_rows:,} rows "
            "(max_dataset_rows).",
            "dataset.num_examples",
        )
    noise = meta.default_noise if spec.noise is None else spec.noise
    try:
        (x_train, y_train), (x_test, y_test) = _compiled_generator(spec.name)(
            jax.random.PRNGKey(spec.seed), num, float(noise), spec.test_fraction
        )
    except ValueError as error:
        raise PlaygroundError(422, f"dataset {spec.name}: {error}", "dataset") from None
    x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
    if meta.task == "classification":
        return Data(
            name=spec.name,
            description=meta.description,
            task="classification",
            x_train=x_train,
            y_train=_labels(np.asarray(y_train)),
            x_test=x_test,
            y_test=_labels(np.asarray(y_test)),
            num_classes=meta.output_dim,
            class_names=[str(c) for c in range(meta.output_dim)],
        )
    return Data(
        name=spec.name,
        description=meta.description,
        task="regression",
        x_train=x_train,
        y_train=np.asarray(y_train, np.float32).reshape(len(x_train), -1),
        x_test=x_test,
        y_test=np.asarray(y_test, np.float32).reshape(len(x_test), -1),
    )


# --- CSV -----------------------------------------------------------------------------------------


def _csv_error(message: str) -> PlaygroundError:
    return PlaygroundError(422, message, "file")


def _cell_value(text: str, line: int, column: int, name: str) -> float:
    where = f"line {line}, column {column} ({name})" if name else f"line {line}, column {column}"
    cell = text.strip()
    if not cell:
        raise _csv_error(
            f"{where} is empty. Every cell needs a number: fill in or remove missing values."
        )
    if cell.lower() in _NOT_FINITE:
        raise _csv_error(
            f"{where} is {cell!r}: NaN and infinite values are not allowed. "
            "Fill in or remove missing values."
        )
    if not _NUMBER.match(cell):
        shown = cell if len(cell) <= 40 else cell[:40] + "..."
        raise _csv_error(
            f"{where} is {shown!r}, which is not a number. Every column must be numeric "
            "(the features, then the target in the last column)."
        )
    value = float(cell)
    if not math.isfinite(value) or abs(value) > 3.0e38:
        raise _csv_error(f"{where} is {cell!r}, too large for float32.")
    return value


def _is_number(cell: str) -> bool:
    cell = cell.strip()
    return bool(_NUMBER.match(cell)) or cell.lower() in _NOT_FINITE


def parse_csv(content: bytes, settings: Settings) -> tuple[list[str], np.ndarray]:
    """Read an uploaded CSV file: ``(column names, float32 array rows x columns)``.

    Raises a 422 :class:`PlaygroundError` naming the line and column of the first problem:
    not UTF-8, an empty file, a ragged row, a cell that is not a number, an empty cell, NaN or
    infinity, fewer than 2 columns or 4 rows, more than ``MAX_CSV_COLUMNS`` columns or
    ``settings.max_dataset_rows`` rows.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _csv_error(
            f"the file is not UTF-8 text (byte {error.start}): upload a plain CSV file."
        ) from None
    if "\x00" in text:
        raise _csv_error("the file holds NUL bytes: upload a plain CSV file, not a binary one.")
    sample = text[:4096]
    delimiter = ","
    if "," not in sample:
        delimiter = ";" if ";" in sample else ("\t" if "\t" in sample else ",")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    names: list[str] = []
    rows: list[list[float]] = []
    width = 0
    first_line = 0
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if width == 0:
                width = len(cells)
                first_line = line
                if width > MAX_CSV_COLUMNS:
                    raise _csv_error(
                        f"line {line} has {width} columns; the limit is {MAX_CSV_COLUMNS} "
                        "columns (features and the target)."
                    )
                if width < 2:
                    raise _csv_error(
                        f"line {line} has {width} column; a dataset needs at least 2 columns: "
                        "one or more features, then the target in the last column."
                    )
                if not any(_is_number(c) for c in cells):
                    header = [c.strip()[:40] for c in cells]
                    names = header
                    continue
                names = [f"x{j + 1}" for j in range(width - 1)] + ["target"]
            if len(cells) != width:
                first = "the header" if header is not None else f"line {first_line}"
                raise _csv_error(
                    f"line {line} has {len(cells)} values, but {first} has {width} columns. "
                    "Every row needs the same number of columns."
                )
            if len(rows) >= settings.max_dataset_rows:
                raise _csv_error(
                    f"the file has more than {settings.max_dataset_rows:,} rows of data; the "
                    f"limit is {settings.max_dataset_rows:,} rows (max_dataset_rows)."
                )
            rows.append([_cell_value(c, line, j + 1, names[j]) for j, c in enumerate(cells)])
    except csv.Error as error:
        raise _csv_error(f"line {reader.line_num}: the CSV is malformed ({error}).") from None
    if width == 0:
        raise _csv_error("the file is empty: it needs a row per example, numbers only.")
    if len(rows) < MIN_CSV_ROWS:
        raise _csv_error(
            f"the file has {len(rows)} rows of data; at least {MIN_CSV_ROWS} are needed "
            "(for a training and a test set)."
        )
    return names, np.asarray(rows, dtype=np.float32)


def csv_data(spec: CsvDataset, columns: list[str], table: np.ndarray, filename: str = "") -> Data:
    """Split an uploaded table into features (every column but the last) and the target."""
    x = table[:, :-1].astype(np.float32)
    target = table[:, -1]
    values = np.unique(target)
    integral = bool(np.all(np.round(target) == target))
    task = spec.task
    if task == "auto":
        task = "classification" if integral and 2 <= len(values) <= MAX_CLASSES else "regression"
    if task == "classification":
        if not integral:
            raise PlaygroundError(
                422,
                f"the target column ({columns[-1]}) holds non-integer values, so it cannot be "
                "read as class labels; use task 'regression'.",
                "dataset.task",
            )
        if not 2 <= len(values) <= MAX_CLASSES:
            raise PlaygroundError(
                422,
                f"the target column ({columns[-1]}) holds {len(values)} distinct values; class "
                f"labels need between 2 and {MAX_CLASSES}.",
                "dataset.task",
            )
        y = np.searchsorted(values, target).astype(np.int32)
    else:
        y = target.astype(np.float32).reshape(-1, 1)
    split_key = jax.random.PRNGKey(spec.seed)
    (x_train, y_train), (x_test, y_test) = _split(split_key, x, y, spec.test_fraction)
    name = filename or f"csv {spec.csv_id}"
    return Data(
        name=name,
        description=f"uploaded CSV: {table.shape[0]} rows, {table.shape[1] - 1} features",
        task=task,
        x_train=np.asarray(x_train),
        y_train=np.asarray(y_train),
        x_test=np.asarray(x_test),
        y_test=np.asarray(y_test),
        num_classes=len(values) if task == "classification" else 0,
        class_names=[f"{v:g}" for v in values] if task == "classification" else [],
        columns=columns,
    )
