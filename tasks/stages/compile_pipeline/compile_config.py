"""Task ``compile_config`` (mapped, one per config): from the compile cache, or compiled in a child process."""

from __future__ import annotations

from pathlib import Path

from tasks.compile.cache import open_cache
from tasks.compile.run import compile_config
from tasks.core import settings as settings_module
from tasks.core.files import local_path
from tasks.core.records import CompileConfig, CompiledArtifact, DatasetRef, ExportedModel, RunContext
from tasks.stages.runner import progress, stage

CACHE_NOTE = {"hit": ", from the compile cache", "rebuilt": ", cache entry was corrupt and is rebuilt"}


@stage("compile_config", key=lambda config, **_: config.key)
def run(ctx: RunContext, exported: ExportedModel, dataset: DatasetRef, config: CompileConfig) -> CompiledArtifact:
    settings = settings_module.load()
    if config.quantiser_tolerance:  # an accuracy-aware quantiser judges the output the labels judge, as the gate
        config = config.model_copy(update={"judged_output": dataset.class_output})
    artifact = compile_config(
        exported,
        config,
        Path(ctx.run_dir) / "compiled",
        timeout_s=ctx.params.compile_timeout_s,
        memory_mb=ctx.params.compile_memory_mb,
        cache=open_cache(settings.compile_cache_uri, settings.s3_endpoint_url) if ctx.params.compile_cache else None,
        calibration=local_path(dataset.calibration_uri) if dataset.calibration_uri else None,
    )
    progress(
        "compile_config",
        f"{config.key}: {artifact.status} in {artifact.stage_seconds:.1f} s"
        f"{CACHE_NOTE.get(artifact.cache, '')}, peak {artifact.peak_memory_mb:.0f} MiB {artifact.reason}".rstrip(),
    )
    return artifact


def config_key(config: dict) -> str:
    """The mapped task instance's name, e.g. ``openvino-bf16``."""
    return CompileConfig.model_validate(config).key
