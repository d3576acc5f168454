"""The base of every record that flows between stages (frozen pydantic models, JSON through XCom), and the
tensor spec and safe-name rule they share."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# Names that become S3 keys, paths and registered-model names.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_safe_name(value: str, what: str) -> str:
    """``value``, if it can be an S3 key segment or a directory name as it is; else a ValueError naming ``what``."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-', start with a letter or digit and "
            "not contain '..' (it becomes an S3 key and a path)"
        )
    return value


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


class TensorSpec(Record):
    name: str
    shape: list[int | str]  # a string is a symbolic (dynamic) dimension; the first one is the batch axis
    dtype: str  # numpy dtype name: float32, int64, ...

    @property
    def batch_axis(self) -> int | None:
        return next((i for i, dim in enumerate(self.shape) if isinstance(dim, str)), None)
