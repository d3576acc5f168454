"""S3 access shared by the stages that write object storage (promotion, the compile cache)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): boto3, botocore.


def region() -> str:
    return os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def s3_client(settings_or_endpoint):
    """A boto3 S3 client for AWS S3 (endpoint None) or an S3-compatible endpoint (moto, MinIO)."""
    import boto3
    from botocore.config import Config

    endpoint = getattr(settings_or_endpoint, "s3_endpoint_url", settings_or_endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region(),
        config=Config(
            # S3-compatible stores reject the CRC checksums boto3 >= 1.36 sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # exponential backoff with jitter between attempts; AWS_MAX_ATTEMPTS as boto3 itself reads it
            retries={"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "6")), "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected an s3://bucket/prefix URI, got {uri!r}")
    return parsed.netloc, parsed.path.strip("/")
