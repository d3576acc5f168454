"""Stages of the compile pipeline as plain functions: no Airflow import anywhere here.

Each stage module takes and returns the small records of :mod:`tasks.core.records`, :mod:`tasks.core.results`,
:mod:`tasks.core.figures` and :mod:`tasks.core.outcomes`;
large things (models, datasets, compiled artifacts, model outputs) live in files
whose URIs and sha256 the records carry.
"""
