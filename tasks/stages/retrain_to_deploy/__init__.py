"""The ``retrain_to_deploy`` DAG's one task: ``train_and_export``."""
