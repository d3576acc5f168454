"""Failures that mean a service could not be reached, said plainly.

MLflow's client and boto3 already retry with exponential backoff (MLflow: MLFLOW_HTTP_REQUEST_MAX_RETRIES
times, backoff factor MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR; boto3: the S3 client's standard retry mode,
tasks.core.storage). What reaches a stage after that is a long library message; this names the service,
its address and the retries, and what to check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout

from tasks.core.settings import Settings

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): botocore.


class ServiceUnreachable(RuntimeError):
    """MLflow or the S3 endpoint did not answer, after the client's retries with backoff."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe(exc: BaseException, settings: Settings) -> str:
    """What to tell the user where ``exc`` means MLflow or S3 was unreachable; "" where it means something else."""
    from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError
    from botocore.exceptions import ReadTimeoutError as BotoReadTimeout

    for cause in _chain(exc):
        if isinstance(cause, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError | BotoReadTimeout):
            where = settings.s3_endpoint_url or "AWS S3"
            return (
                f"S3 endpoint {where} is unreachable (the request was retried with exponential backoff by boto3's "
                f"standard retry mode, then given up): {cause}. Check S3_ENDPOINT_URL and that the store is up"
            )
        text = str(cause)
        if isinstance(cause, RequestsConnectionError | Timeout) or (
            # by name: importing mlflow here would cost every failing stage a second or two
            type(cause).__name__ == "MlflowException" and "Max retries exceeded" in text
        ):
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
            return (
                f"MLflow tracking server {settings.mlflow_tracking_uri} is unreachable (retried {retries} times with "
                f"exponential backoff): {text.splitlines()[0][:300]}. Check MLFLOW_TRACKING_URI and that the "
                "server is up"
            )
    return ""


@contextlib.contextmanager
def named_unreachable(settings: Settings) -> Iterator[None]:
    """Re-raise an unreachable MLflow or S3 as :class:`ServiceUnreachable` with a plain message."""
    try:
        yield
    except ServiceUnreachable:
        raise
    except Exception as exc:
        message = describe(exc, settings)
        if message:
            raise ServiceUnreachable(message) from exc
        raise
