"""Registry review: which version a reviewer approved, and whether it may be promoted (what promotion then reads
from the registry and writes back: :mod:`tasks.registry.promotion`).

The pipeline registers candidates in model ``<name>``, which it created and so may write (MLflow gives a
creator MANAGE). Approval lives where the pipeline cannot write: a reviewer copies the version into model
``<name>.approved`` (``copy_model_version``: same files, its tags frozen in the copy) and moves alias
``champion`` there; that copy's ``artifact_sha256`` is what promotion checks the files against. Before it
trusts an approval, promotion proves that its own login is refused a write on ``<name>.approved``
(``APPROVAL_CONTROL=required``, the default); a registry without logins cannot make that a control, and
promotion says so (``convention``, the local services). A version rejected in review (tag
``review=rejected`` on either), or one whose gate did not pass, is never promoted, whatever the trigger asks.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from tasks.core.settings import Settings
from tasks.registry.client import CHAMPION_ALIAS, client
from tasks.serving.store import PromotionError

APPROVED_SUFFIX = ".approved"
WRITE_PROBE_TAG = "approval-control-probe"  # a tag nobody sets: deleting it asks "may I write?" and changes nothing

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.

REVIEW_TAG, REJECTED = "review", "rejected"
PROMOTED_TAG = "promoted_uri"  # set on a registry version once it is committed and serving points at it


def resolve(settings: Settings, model: str, version_or_alias: str):
    """The registry version named by a number or an alias; the error names what is missing."""
    from mlflow.exceptions import MlflowException

    registry = client(settings)
    try:
        if version_or_alias.isdigit():
            return registry.get_model_version(model, version_or_alias)
        return registry.get_model_version_by_alias(model, version_or_alias)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise  # e.g. the server is unreachable: not a statement about the model
        raise PromotionError(f"registered model {model!r} has no version or alias {version_or_alias!r}") from exc


def approved_model(model: str) -> str:
    return model + APPROVED_SUFFIX


class Approval(NamedTuple):
    """A candidate version (``source``, in ``<model>``) and the reviewer's copy of it (``copy``, in
    ``<model>.approved``); ``control`` says whether the pipeline's login was proven unable to write the copy."""

    source: object
    copy: object
    control: str


def prepare_approved_model(settings: Settings, model: str) -> None:
    """Create ``<model>.approved`` with the candidate model, so no other login can take the name first (MLflow lets
    any login create a registered model and makes it its MANAGEr), and hand it over: the pipeline gives up its
    MANAGE and keeps the server's default (READ),
    reviewers write it through their role. Where approval is a convention (no logins), it is only created."""
    from mlflow.exceptions import MlflowException

    name = approved_model(model)
    registry = client(settings)
    try:
        registry.create_registered_model(
            name,
            description=f"Versions of {model} a reviewer approved (copied here with copy_model_version); "
            "alias champion is what promote_model ships. The pipeline can only read this model.",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    if settings.approval_control != "required" or _may_write(settings, name) is False:
        return
    from mlflow.server import get_app_client

    username = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if not username:
        raise PromotionError(
            f"APPROVAL_CONTROL=required, but the pipeline has no MLflow login (MLFLOW_TRACKING_USERNAME) to hand "
            f"{name!r} over from"
        )
    # its creator's MANAGE given up: what is left is the server's default_permission (READ, as shipped)
    try:
        get_app_client("basic-auth", tracking_uri=settings.mlflow_tracking_uri).revoke_user_permission(
            username, "registered_model", name
        )
    except MlflowException as exc:
        raise PromotionError(
            f"APPROVAL_CONTROL=required, but {name!r} could not be handed over ({exc.message[:200]}): an MLflow "
            "server without its basic-auth app cannot make approval a control (set APPROVAL_CONTROL=convention "
            "only where that is accepted)"
        ) from exc


def _may_write(settings: Settings, name: str) -> bool:
    """Whether this process's MLflow login may write registered model ``name``: a delete of a tag nobody sets is
    answered 403, or not, before anything changes."""
    from mlflow.exceptions import MlflowException

    try:
        client(settings).delete_registered_model_tag(name, WRITE_PROBE_TAG)
    except MlflowException as exc:
        if exc.error_code == "PERMISSION_DENIED":
            return False
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    return True


def approve(settings: Settings, model: str, version: str, alias: str = CHAMPION_ALIAS):
    """What a reviewer does (with the reviewer's login): copy the version into ``<model>.approved`` (created by
    the first approval, so a reviewer or admin owns it) and move ``alias`` to the copy. Approving a version
    approved before reuses its copy."""
    registry = client(settings)
    copy = _copy_of(registry, model, version) or registry.copy_model_version(
        f"models:/{model}/{version}", approved_model(model)
    )
    registry.set_registered_model_alias(approved_model(model), alias, copy.version)
    return copy


def _copy_of(registry, model: str, version: str):
    """The approved copy of ``model`` version ``version``, or None."""
    from mlflow.exceptions import MlflowException

    source = f"models:/{model}/{version}"
    try:
        copies = registry.search_model_versions(f"name = '{approved_model(model)}'")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None
    return next((c for c in sorted(copies, key=lambda c: -int(c.version)) if c.source == source), None)


def approved(settings: Settings, model: str, version_or_alias: str) -> Approval:
    """The approved version named by an alias of ``<model>.approved`` (``champion``) or by the candidate's version
    number, with the proof that approval is a control here. A version no reviewer copied is refused by name."""
    registry = client(settings)
    if version_or_alias.isdigit():
        source = resolve(settings, model, version_or_alias)
        copy = _copy_of(registry, model, version_or_alias)
        if copy is None:
            raise PromotionError(
                f"version {version_or_alias} of {model} was not approved: no copy of it in registered model "
                f"{approved_model(model)!r} (a reviewer approves by copying it there and moving alias champion)"
            )
    else:
        copy = resolve(settings, approved_model(model), version_or_alias)
        origin = copy.source.removeprefix("models:/").rsplit("/", 1)
        if len(origin) != 2 or origin[0] != model or not origin[1].isdigit():
            raise PromotionError(
                f"{approved_model(model)} version {copy.version} is not a copy of a version of {model} "
                f"(its source is {copy.source!r}); it is never promoted"
            )
        source = resolve(settings, model, origin[1])
    return Approval(source=source, copy=copy, control=approval_control(settings, approved_model(model)))


def approval_control(settings: Settings, name: str) -> str:
    """Prove that this process's MLflow login may not write registered model ``name``: "enforced", or
    "convention" where the settings allow it; otherwise refused by name."""
    if not _may_write(settings, name):
        return "enforced"
    why = f"the pipeline's MLflow login can write registered model {name!r}, so an approval there is not a control"
    if settings.approval_control == "required":
        raise PromotionError(
            f"{why}. Let a reviewer create it (the first approval does) and give the pipeline no more than READ on "
            "it; where MLflow has no logins (local), set APPROVAL_CONTROL=convention"
        )
    return f"convention ({why}; APPROVAL_CONTROL=convention)"


def refusal(approval: Approval) -> str:
    """Why this approved version may not be promoted, or ""."""
    source, copy = approval.source, approval.copy
    if REJECTED in (source.tags.get(REVIEW_TAG), copy.tags.get(REVIEW_TAG)):
        return f"version {source.version} of {source.name} was rejected in review (tag {REVIEW_TAG}={REJECTED})"
    if "pass" != copy.tags.get("validation") or source.tags.get("validation") != "pass":  # copy's: frozen at approval
        return f"version {source.version} of {source.name} did not pass the validation gate"
    return ""


REGISTRY_PAGE = 100  # MLflow's own default page of registered models


def registered_models(registry, page_size: int = REGISTRY_PAGE) -> list:
    """Every registered model, page after page (one call stops at a page: MLflow's default is 100 models)."""
    found, token = [], None
    while True:
        page = registry.search_registered_models(max_results=page_size, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def pending_champions(settings: Settings, page_size: int = REGISTRY_PAGE) -> list[tuple[str, str]]:
    """(model, version) of every champion that is promotable and not promoted yet: what the schedule picks up.
    A champion whose approval is not a control is refused by name (``approved``), not skipped."""
    pending = []
    for registered in registered_models(client(settings), page_size):
        if not registered.name.endswith(APPROVED_SUFFIX) or CHAMPION_ALIAS not in (registered.aliases or {}):
            continue
        approval = approved(settings, registered.name.removesuffix(APPROVED_SUFFIX), CHAMPION_ALIAS)
        if not refusal(approval) and PROMOTED_TAG not in approval.source.tags:
            pending.append((approval.source.name, str(approval.source.version)))
    return pending
