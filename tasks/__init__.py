"""Stages of the compile pipeline as plain functions: no Airflow import anywhere here.

Each stage module takes and returns the small records of :mod:`tasks.core.records` and :mod:`tasks.core.results`;
large things (models, datasets, compiled artifacts, model outputs) live in files
whose URIs and sha256 the records carry.
"""
