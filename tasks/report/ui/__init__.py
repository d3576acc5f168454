"""The Compile reports pages of the Airflow UI plugin (plugins/compile_reports.py), without Airflow: ``collect`` reads
MLflow and S3, ``findings`` and ``charts`` turn a report into the gate's findings and Vega-Lite charts, ``pages``
renders the HTML."""
