"""Everything that talks to MLflow's tracking server and model registry, one module per job:

- ``client``: the MLflow client, links into its UI, the tags and aliases that tie MLflow to pipeline runs;
- ``versions``: a pipeline run's registered version: created once, tagged, described, aliased ``candidate``;
- ``review``: which version a reviewer approved (its copy in ``<model>.approved``, alias ``champion``) and whether
  it may be promoted;
- ``promotion``: what promotion reads from the registry (the approved files, the smoke samples) and writes back
  (what is promoted, what serves);
- ``access``: who may do what (MLflow users and roles): ``python -m tasks.registry.access``.

Which figures and tags a stage writes is the stage's choice (tasks.stages.compile_pipeline.record, register).
"""
