"""Task ``compile_config`` (mapped, one per config): from the compile cache, or compiled in a child process.

Compiled on this host in its own scratch directory, then put in the run store under ``<run>/compiled/<config>``,
where the config's run hosts fetch it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.compile.cache import open_cache
from tasks.compile.run import Heartbeat, compile_config
from tasks.core import settings as settings_module
from tasks.core import store
from tasks.core.files import file_ref, local_path
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, CompiledArtifact, DatasetRef, ExportedModel, RunContext, Status
from tasks.stages.runner import progress, stage

CACHE_NOTE = {"hit": ", from the compile cache", "rebuilt": ", cache entry was corrupt and is rebuilt"}


@stage("compile_config", key=lambda config, **_: config.key)
def run(ctx: RunContext, exported: ExportedModel, dataset: DatasetRef, config: CompileConfig) -> CompiledArtifact:
    limit = ctx.params.compile_timeout_s

    def still_compiling(seconds: float) -> None:  # a long step says how far along it is
        progress("compile_config", f"{config.key}: compiling, {seconds:.0f} s so far (limit {limit} s)")

    artifact = compile_here(exported, dataset, config, ctx.scratch("compiled"), ctx.params, still_compiling)
    artifact = publish(ctx, artifact).model_copy(update={"host": settings_module.this_host()})
    progress(
        "compile_config",
        f"{config.key}: {artifact.status} in {artifact.stage_seconds:.1f} s"
        f"{CACHE_NOTE.get(artifact.cache, '')}, peak {artifact.peak_memory_mb:.0f} MiB {artifact.reason}".rstrip(),
    )
    return artifact


def compile_here(
    exported: ExportedModel,
    dataset: DatasetRef,
    config: CompileConfig,
    out_dir: Path,
    params: PipelineParams,
    heartbeat: Heartbeat | None = None,
) -> CompiledArtifact:
    """``config`` compiled on this host into ``out_dir`` as the pipeline compiles it (through the compile cache, with
    the dataset's calibration inputs and the run's limits). ``make bench`` compiles through it too, so that it
    measures the artifacts the pipeline would register."""
    settings = settings_module.load()
    if config.quantiser_tolerance:  # an accuracy-aware quantiser judges the output the labels judge, as the gate
        config = config.model_copy(update={"judged_output": dataset.class_output})
    return compile_config(
        exported,
        config,
        out_dir,
        timeout_s=params.compile_timeout_s,
        memory_mb=params.compile_memory_mb,
        cache=open_cache(settings.compile_cache_uri, settings.s3_endpoint_url) if params.compile_cache else None,
        calibration=store.fetch(dataset.calibration_ref) if dataset.calibration_ref else None,
        heartbeat=heartbeat,
    )


def publish(ctx: RunContext, artifact: CompiledArtifact) -> CompiledArtifact:
    """The compiled files and the compiler's log put in the run store; the record names them there."""
    update = {}
    where = store.join(ctx.run_uri, "compiled", artifact.config.key)
    if artifact.log_uri:
        log = store.publish(file_ref(local_path(artifact.log_uri)), f"{where}.compile.log")
        update |= {"log_uri": log.uri, "log_sha256": log.sha256}
        local_path(artifact.log_uri).unlink(missing_ok=True)
    if artifact.status == Status.OK:
        update["uri"] = store.publish(artifact.ref, where).uri
        shutil.rmtree(local_path(artifact.ref.uri), ignore_errors=True)
    return artifact.model_copy(update=update)


def config_key(config: dict) -> str:
    """The mapped task instance's name, e.g. ``openvino-bf16``."""
    return CompileConfig.model_validate(config).key
