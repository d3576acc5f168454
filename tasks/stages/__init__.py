"""One package per DAG, one module per task, named as the DAG and the task are (see :mod:`tasks.stages.runner`)."""

# Asset names shared by the DAGs (the DAG files build airflow.sdk.Asset objects from them).
MODEL_EXPORTED = "model_exported"  # retrain_to_deploy -> compile_pipeline
MODEL_REGISTERED = "model_registered"  # compile_pipeline -> promote_model
