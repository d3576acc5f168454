"""Who may do what in the MLflow registry, where its server runs MLflow's basic-auth app (``--app-name basic-auth``).

- **admin**: created by the server itself on first start (``MLFLOW_AUTH_ADMIN_PASSWORD``); runs this module.
- **the pipeline** (``MLFLOW_PIPELINE_USERNAME``/``_PASSWORD``; its tasks log in with the same values as
  ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``): creates experiments, runs and registered models, and MLflow
  gives a creator MANAGE on what it created. It sets alias ``candidate``. It creates ``<model>.approved``
  with each new model and gives up its MANAGE there, so it can only read approvals (tasks.registry.review).
- **reviewers** (``MLFLOW_REVIEWERS_FILE``: a JSON object, user name -> password): role ``reviewers``,
  EDIT on every registered model, so they approve (copy a version into ``<model>.approved``, move
  ``champion`` there) and reject (tag ``review=rejected``).
- **anyone else with a login**: READ, the server's ``default_permission``. **No login**: 401 on every route.

Run once per deployment and again whenever the files change: ``python -m tasks.registry.access``
(compose's ``mlflow-users`` service does). Creating what exists is skipped; a changed password is updated.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REVIEWERS_ROLE = "reviewers"
WORKSPACE = "default"  # MLflow's workspace when none are configured

# Heavy, so imported inside the functions that need them: mlflow.


class RegistryAccessError(RuntimeError):
    pass


def _auth_client(tracking_uri: str):
    from mlflow.server import get_app_client

    return get_app_client("basic-auth", tracking_uri=tracking_uri)


def ensure_user(auth, username: str, password: str) -> None:
    """Create ``username``, or set its password where it exists."""
    from mlflow.exceptions import MlflowException

    if len(password) < 12:
        raise RegistryAccessError(f"the password of MLflow user {username!r} is shorter than 12 characters")
    try:
        auth.get_user(username)
    except MlflowException:
        auth.create_user(username, password)
        return
    auth.update_user_password(username, password)


def ensure_reviewers(auth, reviewers: dict[str, str]) -> None:
    """Role ``reviewers`` with EDIT on every registered model, and each reviewer in it."""
    role = next((r for r in auth.list_roles(WORKSPACE) if r.name == REVIEWERS_ROLE), None)
    if role is None:
        role = auth.create_role(WORKSPACE, REVIEWERS_ROLE, "approve (alias champion) or reject registry versions")
    granted = {(p.resource_type, p.resource_pattern, p.permission) for p in auth.list_role_permissions(role.id)}
    if ("registered_model", "*", "EDIT") not in granted:
        auth.add_role_permission(role.id, "registered_model", "*", "EDIT")
    for username, password in reviewers.items():
        ensure_user(auth, username, password)
        if REVIEWERS_ROLE not in {r.name for r in auth.list_user_roles(username)}:
            auth.assign_role(username, role.id)


def read_reviewers(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        reviewers = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RegistryAccessError(f"MLFLOW_REVIEWERS_FILE {path}: {exc}") from exc
    if not isinstance(reviewers, dict) or not all(isinstance(v, str) for v in reviewers.values()):
        raise RegistryAccessError(f"MLFLOW_REVIEWERS_FILE {path} must be a JSON object of user name -> password")
    return reviewers


def ensure_access(tracking_uri: str, pipeline: tuple[str, str], reviewers: dict[str, str]) -> None:
    """The pipeline's user and the reviewers, as this module's docstring says; run with admin's login in the env."""
    auth = _auth_client(tracking_uri)
    ensure_user(auth, *pipeline)
    ensure_reviewers(auth, reviewers)


def main() -> int:
    needed = ["MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD"]  # fmt: skip
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        print(f"registry access: set {', '.join(missing)} (admin's login, the pipeline's user)", file=sys.stderr)
        return 2
    try:
        reviewers = read_reviewers(os.environ.get("MLFLOW_REVIEWERS_FILE"))
        ensure_access(
            os.environ["MLFLOW_TRACKING_URI"],
            (os.environ["MLFLOW_PIPELINE_USERNAME"], os.environ["MLFLOW_PIPELINE_PASSWORD"]),
            reviewers,
        )
    except RegistryAccessError as exc:
        print(f"registry access: {exc}", file=sys.stderr)
        return 2
    print(f"registry access: pipeline user {os.environ['MLFLOW_PIPELINE_USERNAME']}, reviewers {sorted(reviewers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
